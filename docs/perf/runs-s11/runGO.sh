#!/bin/bash
# run GO (session 11): review refactor (one arrive helper for both attention kernels' counters, one
# load helper for the split kernel's K and V passes, the tier passed to the step capture): gpu-test,
# decode at depths
D=.device/decdec
timeout 300 $D gpu-test --model models/stories260K --text .device/data/tinystories-sample.txt --ctx 512 --chunks 8 > $OUT/h200-gpu-test-review-s11.txt 2>&1; echo "gpu-test rc $?"
grep -E "^ppl|FAIL|checks|rror|panic" $OUT/h200-gpu-test-review-s11.txt | tail -10
timeout 150 $D bench decode --model synthetic:llama3-8b --prompt 0 --tokens 256 --bits 3 --k-chunk 0,4 --depth 0,512,1024,4096 > $OUT/dec_review.txt 2>&1; echo "== decode rc $?"; grep -E "^k_chunk|rror" $OUT/dec_review.txt | cut -c1-105
