#!/bin/bash
# run FD (session 10): final tree; gpu-test with the stories260K GPU/CPU perplexity parity
D=.device/decdec
timeout 400 $D gpu-test --model models/stories260K --text .device/data/tinystories-sample.txt --ctx 512 --chunks 8 --out $OUT/h200-gpu-test-s10.txt > $OUT/gpu-test.log 2>&1; echo "gpu-test rc $?"
grep -E "^ppl|FAIL|checks|rror|panic" $OUT/gpu-test.log | tail -14
