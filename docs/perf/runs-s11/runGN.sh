#!/bin/bash
# run GN (session 11): final tree, attention tiers from 512 (one block per head < 512, split with
# one head per block < 1536, split with the GQA group's heads beyond): gpu-test, decode at depths
D=.device/decdec
timeout 300 $D gpu-test --model models/stories260K --text .device/data/tinystories-sample.txt --ctx 512 --chunks 8 > $OUT/h200-gpu-test-final3-s11.txt 2>&1; echo "gpu-test rc $?"
grep -E "^ppl|FAIL|checks|rror|panic" $OUT/h200-gpu-test-final3-s11.txt | tail -10
timeout 150 $D bench decode --model synthetic:llama3-8b --prompt 0 --tokens 256 --bits 3 --k-chunk 0,4 --depth 0,256,512,1024,2048,4096 --json $OUT/h200-bench-decode-final-s11.json > $OUT/dec_final3.txt 2>&1; echo "== decode rc $?"; grep -E "^k_chunk|rror" $OUT/dec_final3.txt | cut -c1-105
