#!/bin/bash
# run KH (session 15): the final tree's decode at depth and with quantized heads (README figures)
N=.device/decdec
timeout 200 $N bench decode --model synthetic:llama3-8b --bits 3 --k-chunk 0 --tokens 256 --depth 0,1024,4096 > $OUT/h200-bench-decode-depth-s15.txt 2>&1; echo "depth rc $?"
grep -E "depth|^k_chunk|rror" $OUT/h200-bench-decode-depth-s15.txt | cut -c1-100
for hb in 8 4; do
  timeout 100 $N bench decode --model synthetic:llama3-8b --bits 3 --k-chunk 0 --tokens 256 --prompt 0 --head-bits $hb > $OUT/d.txt 2>&1; echo "== head $hb rc $?"
  cat $OUT/d.txt >> $OUT/h200-bench-decode-head-s15.txt; grep -E "^k_chunk|rror" $OUT/d.txt | cut -c1-100
done
rm -f $OUT/d.txt
timeout 100 $N bench decode --model synthetic:llama3-8b --bits 4 --k-chunk 0,4,8 --tokens 256 --prompt 0 > $OUT/h200-bench-decode-4bit-s15.txt 2>&1; echo "== 4-bit rc $?"
grep -E "^k_chunk|rror" $OUT/h200-bench-decode-4bit-s15.txt | cut -c1-100
timeout 200 $N bench kernels --shapes llama3-8b --bits 3,4 --k-chunk 0,2,4,8 --n-dec 32,64 --no-lut --no-coop --json $OUT/h200-bench-kernels-s15.json > $OUT/h200-bench-kernels-s15.txt 2>&1; echo "== kernels rc $?"
grep -A40 "layer sums" $OUT/h200-bench-kernels-s15.txt | grep -E "uniform [34]-bit g128  |producer of x" | cut -c1-110
