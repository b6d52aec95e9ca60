#!/bin/bash
# run JB (session 14, experiment 64): GEMV loop with incremental refill addresses. gpu-test of the new
# kernels, then bench kernels A/B (base = the previous tree's binary) on the same machine.
N=.device/decdec; B=.device/decdec-base
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,clocks.mem --format=csv,noheader
timeout 300 $N gpu-test --model models/stories260K --text .device/data/tinystories-sample.txt --ctx 512 --chunks 8 > $OUT/h200-gpu-test-exp64-s14.txt 2>&1; echo "gpu-test rc $?"
grep -E "FAIL|checks|rror|panic" $OUT/h200-gpu-test-exp64-s14.txt | tail -6 | cut -c1-200
for v in base new base new; do
  X=$N; [ $v = base ] && X=$B
  timeout 150 $X bench kernels --shapes llama3-8b --bits 3,4 --k-chunk 0,4,8 --n-dec 32,64 --no-lut --no-coop > $OUT/k-$v.txt 2>&1; echo "== kernels $v rc $?"
  cat $OUT/k-$v.txt >> $OUT/h200-bench-kernels-exp64-$v-s14.txt
  grep -E "^  (qkv|o|gate-up|down) +uniform [34]-bit g128 +[0-9]|^  uniform [34]-bit g128 +[0-9]|by the producer of x k_chunk" $OUT/k-$v.txt | cut -c1-110
done
rm -f $OUT/k-*.txt
