#!/bin/bash
# run KG (session 15, experiment 74): rmsnorm_sel reads its chunk's norm weight before the PDL wait
# and its chunk's h with the sum's loads; decode with DEC A/B against experiment 72's tree.
N=.device/decdec; B=.device/decdec-base
timeout 300 $N gpu-test --model models/stories260K --text .device/data/tinystories-sample.txt --ctx 512 --chunks 8 > $OUT/h200-gpu-test-exp74-s15.txt 2>&1; echo "gpu-test rc $?"
grep -E "FAIL|checks|rror|panic" $OUT/h200-gpu-test-exp74-s15.txt | tail -5 | cut -c1-150
for v in base new base new base new; do
  X=$N; [ $v = base ] && X=$B
  for bits in 3; do
    timeout 150 $X bench decode --model synthetic:llama3-8b --bits $bits --k-chunk 4,8 --tokens 256 --prompt 0 > $OUT/d.txt 2>&1; echo "== decode $v bits $bits rc $?"
    cat $OUT/d.txt >> $OUT/h200-bench-decode-exp74-$v-s15.txt
    grep -E "^k_chunk|rror" $OUT/d.txt | cut -c1-100
  done
done
rm -f $OUT/d.txt
