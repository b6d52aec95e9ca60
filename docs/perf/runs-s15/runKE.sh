#!/bin/bash
# run KE (session 15, experiment 72): the GEMV prologue stages x with all loads in flight (cp.async
# for xmode 0/2, RMSNorm weight read before the PDL wait and h kept in registers for xmode 1),
# against the previous tree's binary, same machine.
N=.device/decdec; B=.device/decdec-base
timeout 300 $N gpu-test --model models/stories260K --text .device/data/tinystories-sample.txt --ctx 512 --chunks 8 > $OUT/h200-gpu-test-exp72-s15.txt 2>&1; echo "gpu-test rc $?"
grep -E "FAIL|checks|rror|panic|fused RMSNorm == " $OUT/h200-gpu-test-exp72-s15.txt | tail -20 | cut -c1-150
for v in base new base new; do
  X=$N; [ $v = base ] && X=$B
  timeout 200 $X bench kernels --shapes llama3-8b --bits 3,4 --k-chunk 0 --no-lut --no-coop > $OUT/k.txt 2>&1; echo "== kernels $v rc $?"
  cat $OUT/k.txt >> $OUT/h200-bench-kernels-exp72-$v-s15.txt
  grep -E "uniform [34]-bit g128 +[0-9.]+ us|memonly" $OUT/k.txt | cut -c1-100
  grep -A6 "layer sums" $OUT/k.txt | grep -E "uniform [34]-bit g128  " | cut -c1-100
done
for v in base new base new; do
  X=$N; [ $v = base ] && X=$B
  for bits in 3 4; do
    timeout 150 $X bench decode --model synthetic:llama3-8b --bits $bits --k-chunk 0,4 --tokens 256 --prompt 0 > $OUT/d.txt 2>&1; echo "== decode $v bits $bits rc $?"
    cat $OUT/d.txt >> $OUT/h200-bench-decode-exp72-$v-s15.txt
    grep -E "^k_chunk|rror" $OUT/d.txt | cut -c1-100
  done
done
rm -f $OUT/d.txt $OUT/k.txt
