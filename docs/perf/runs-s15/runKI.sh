#!/bin/bash
# run KI (session 15): the final tree (block_rms_inv shared by the fused norm and rmsnorm_sel, same
# SASS counts): gpu-test and one decode pass.
N=.device/decdec
timeout 300 $N gpu-test --model models/stories260K --text .device/data/tinystories-sample.txt --ctx 512 --chunks 8 > $OUT/h200-gpu-test-s15.txt 2>&1; echo "gpu-test rc $?"
grep -E "FAIL|checks|rror|panic" $OUT/h200-gpu-test-s15.txt | tail -5 | cut -c1-150
timeout 150 $N bench decode --model synthetic:llama3-8b --bits 3 --k-chunk 0,4 --tokens 256 --prompt 0 > $OUT/h200-bench-decode-final-s15.txt 2>&1; echo "== decode rc $?"
grep -E "^k_chunk|rror" $OUT/h200-bench-decode-final-s15.txt | cut -c1-100
