#!/bin/bash
# run JG (session 14, experiment 67): weights-only cp.async groups (all stages prefetched before the
# PDL wait), x through registers one chunk ahead. gpu-test, then kernel and decode A/B against the
# tree before it (base) on the same machine.
N=.device/decdec; B=.device/decdec-base
timeout 300 $N gpu-test --model models/stories260K --text .device/data/tinystories-sample.txt --ctx 512 --chunks 8 > $OUT/h200-gpu-test-exp67-s14.txt 2>&1; echo "gpu-test rc $?"
grep -E "FAIL|checks|rror|panic" $OUT/h200-gpu-test-exp67-s14.txt | tail -6 | cut -c1-200
for v in base new base new; do
  X=$N; [ $v = base ] && X=$B
  timeout 120 $X bench kernels --shapes llama3-8b --bits 3,4 --k-chunk 0,4 --n-dec 64 --no-lut --no-coop > $OUT/k.txt 2>&1; echo "== kernels $v rc $?"
  cat $OUT/k.txt >> $OUT/h200-bench-kernels-exp67-$v-s14.txt
  grep -E "^  (qkv|o|gate-up|down) +uniform [34]-bit g128 +[0-9]|^  uniform [34]-bit g128 +[0-9]|by the producer of x k_chunk" $OUT/k.txt | cut -c1-110
  for bits in 3 4; do
    timeout 100 $X bench decode --model synthetic:llama3-8b --bits $bits --k-chunk 0,4 --tokens 256 --prompt 0 > $OUT/d.txt 2>&1; echo "== decode $v bits $bits rc $?"
    cat $OUT/d.txt >> $OUT/h200-bench-decode-exp67-$v-s14.txt
    grep -E "^k_chunk|rror" $OUT/d.txt | cut -c1-100
  done
done
rm -f $OUT/k.txt $OUT/d.txt
