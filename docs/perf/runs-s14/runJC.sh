#!/bin/bash
# run JC (session 14, experiment 64): decode A/B, new loop vs the previous tree's binary, same machine
N=.device/decdec; B=.device/decdec-base
for v in base new base new; do
  X=$N; [ $v = base ] && X=$B
  for bits in 3 4; do
    timeout 150 $X bench decode --model synthetic:llama3-8b --bits $bits --k-chunk 0,4 --tokens 256 --prompt 0 > $OUT/d.txt 2>&1; echo "== $v bits $bits rc $?"
    cat $OUT/d.txt >> $OUT/h200-bench-decode-exp64-$v-s14.txt
    grep -E "^k_chunk|rror" $OUT/d.txt | cut -c1-100
  done
done
timeout 150 $N bench decode --model synthetic:llama3-8b --bits 16 --k-chunk 0 --tokens 256 --prompt 0 > $OUT/d.txt 2>&1; echo "== new bits 16 rc $?"
cat $OUT/d.txt >> $OUT/h200-bench-decode-exp64-new-s14.txt; grep -E "^k_chunk|rror" $OUT/d.txt | cut -c1-100
rm -f $OUT/d.txt
