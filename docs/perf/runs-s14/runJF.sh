#!/bin/bash
# run JF (session 14): the session's final tree (experiments 64 + 66): gpu-test, decode A/B of the
# compensated gate-up on the _b4 kernel (DECDEC_B4=nodec = the old rule), kernel bench, 16-bit decode.
N=.device/decdec
timeout 300 $N gpu-test --model models/stories260K --text .device/data/tinystories-sample.txt --ctx 512 --chunks 8 > $OUT/h200-gpu-test-s14.txt 2>&1; echo "gpu-test rc $?"
grep -E "FAIL|checks|rror|panic|_b4|16400" $OUT/h200-gpu-test-s14.txt | tail -8 | cut -c1-160
for b4 in nodec default nodec default; do
  for bits in 3 4; do
    DECDEC_B4=$b4 timeout 100 $N bench decode --model synthetic:llama3-8b --bits $bits --k-chunk 0,4,8 --tokens 256 --prompt 0 > $OUT/d.txt 2>&1; echo "== decode B4=$b4 bits $bits rc $?"
    cat $OUT/d.txt >> $OUT/h200-bench-decode-b4-$b4-s14.txt
    grep -E "^k_chunk|rror" $OUT/d.txt | cut -c1-100
  done
done
timeout 100 $N bench decode --model synthetic:llama3-8b --bits 16 --k-chunk 0 --tokens 256 --prompt 0 > $OUT/h200-bench-decode-16-s14.txt 2>&1; echo "== decode 16 rc $?"
grep -E "^k_chunk|rror" $OUT/h200-bench-decode-16-s14.txt | cut -c1-100
timeout 200 $N bench kernels --shapes llama3-8b --bits 3,4 --k-chunk 0,2,4,8 --n-dec 32,64 --no-lut --no-coop --json $OUT/h200-bench-kernels-s14.json > $OUT/h200-bench-kernels-s14.txt 2>&1; echo "== kernels rc $?"
grep -A40 "layer sums" $OUT/h200-bench-kernels-s14.txt | grep -E "uniform [34]-bit g128  |producer of x" | cut -c1-110
rm -f $OUT/d.txt
