#!/bin/bash
# run JE (session 14, experiment 66): after experiment 64's leaner loop, where does the 4-blocks-per-SM
# kernel pay (DECDEC_B4), and which split-K is best per shape now (--split-sweep)?
N=.device/decdec
for b4 in wide all; do
  DECDEC_B4=$b4 timeout 120 $N bench kernels --shapes llama3-8b --bits 3,4 --k-chunk 0,4 --n-dec 32,64 --no-lut --no-coop > $OUT/k.txt 2>&1; echo "== kernels B4=$b4 rc $?"
  cat $OUT/k.txt >> $OUT/h200-bench-kernels-exp66-$b4-s14.txt
  grep -E "^  (qkv|o|gate-up|down) +uniform [34]-bit g128 +[0-9]|^  uniform [34]-bit g128 +[0-9]|by the producer of x k_chunk" $OUT/k.txt | cut -c1-110
done
for b4 in wide all dec alldec wide; do
  for bits in 3 4; do
    DECDEC_B4=$b4 timeout 100 $N bench decode --model synthetic:llama3-8b --bits $bits --k-chunk 0,4 --tokens 256 --prompt 0 > $OUT/d.txt 2>&1; echo "== decode B4=$b4 bits $bits rc $?"
    cat $OUT/d.txt >> $OUT/h200-bench-decode-exp66-s14.txt
    grep -E "^k_chunk|rror" $OUT/d.txt | cut -c1-100
  done
done
timeout 150 $N bench kernels --shapes llama3-8b --bits 3,4 --k-chunk 0 --no-lut --no-coop --split-sweep > $OUT/h200-bench-kernels-splits-exp66-s14.txt 2>&1; echo "== split sweep rc $?"
grep -iE "split" $OUT/h200-bench-kernels-splits-exp66-s14.txt | cut -c1-120 | head -40
rm -f $OUT/k.txt $OUT/d.txt
