#!/bin/bash
# run KF (session 15, experiment 73): the 4-blocks-per-SM GEMV (uncompensated gate-up in decode)
# prefetches its RMSNorm weight into L1 before the PDL wait; decode A/B against experiment 72.
N=.device/decdec; B=.device/decdec-base
timeout 300 $N gpu-test --model models/stories260K --text .device/data/tinystories-sample.txt --ctx 512 --chunks 8 > $OUT/h200-gpu-test-exp73-s15.txt 2>&1; echo "gpu-test rc $?"
grep -E "FAIL|checks|rror|panic" $OUT/h200-gpu-test-exp73-s15.txt | tail -5 | cut -c1-150
for v in base new base new base new; do
  X=$N; [ $v = base ] && X=$B
  for bits in 3 4; do
    timeout 150 $X bench decode --model synthetic:llama3-8b --bits $bits --k-chunk 0 --tokens 256 --prompt 0 > $OUT/d.txt 2>&1; echo "== decode $v bits $bits rc $?"
    cat $OUT/d.txt >> $OUT/h200-bench-decode-exp73-$v-s15.txt
    grep -E "^k_chunk|rror" $OUT/d.txt | cut -c1-100
  done
done
rm -f $OUT/d.txt
