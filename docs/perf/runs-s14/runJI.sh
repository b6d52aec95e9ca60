#!/bin/bash
# run JI (session 14): the final tree's decode at depth and with quantized heads (README figures)
N=.device/decdec
timeout 200 $N bench decode --model synthetic:llama3-8b --bits 3 --k-chunk 0 --tokens 256 --depth 0,1024,4096 > $OUT/h200-bench-decode-depth-s14.txt 2>&1; echo "depth rc $?"
grep -E "depth|^k_chunk|rror" $OUT/h200-bench-decode-depth-s14.txt | cut -c1-100
for hb in 8 4; do
  timeout 100 $N bench decode --model synthetic:llama3-8b --bits 3 --k-chunk 0 --tokens 256 --prompt 0 --head-bits $hb > $OUT/d.txt 2>&1; echo "== head $hb rc $?"
  cat $OUT/d.txt >> $OUT/h200-bench-decode-head-s14.txt; grep -E "^k_chunk|rror" $OUT/d.txt | cut -c1-100
done
rm -f $OUT/d.txt
