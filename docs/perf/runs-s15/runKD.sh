#!/bin/bash
# run KD (session 15, experiment 71): DEC blocks gather several slices per PCIe round trip
# (slices_at_once) against the previous tree's binary, same machine.
N=.device/decdec; B=.device/decdec-base
timeout 300 $N gpu-test --model models/stories260K --text .device/data/tinystories-sample.txt --ctx 512 --chunks 8 > $OUT/h200-gpu-test-exp71-s15.txt 2>&1; echo "gpu-test rc $?"
grep -E "FAIL|checks|rror|panic" $OUT/h200-gpu-test-exp71-s15.txt | tail -12 | cut -c1-150
for v in base new; do
  X=$N; [ $v = base ] && X=$B
  timeout 200 $X bench kernels --shapes llama3-8b --bits 3 --k-chunk 2,4,8 --n-dec 16,32,64 --no-lut --no-coop > $OUT/h200-bench-kernels-exp71-$v-s15.txt 2>&1; echo "== kernels $v rc $?"
  grep -A40 "layer sums" $OUT/h200-bench-kernels-exp71-$v-s15.txt | grep -E "uniform [34]-bit g128  |producer of x" | cut -c1-110
  grep -E "gate-up.*(producer of x|phases)" $OUT/h200-bench-kernels-exp71-$v-s15.txt | cut -c1-130
done
for v in base new base new; do
  X=$N; [ $v = base ] && X=$B
  timeout 150 $X bench decode --model synthetic:llama3-8b --bits 3 --k-chunk 0,4,8 --tokens 256 --prompt 0 > $OUT/d.txt 2>&1; echo "== decode $v bits 3 rc $?"
  cat $OUT/d.txt >> $OUT/h200-bench-decode-exp71-$v-s15.txt
  grep -E "^k_chunk|rror" $OUT/d.txt | cut -c1-100
done
rm -f $OUT/d.txt
