#!/bin/bash
# run KC (session 15, experiment 70): DEC gather by bulk copies (8 DEC blocks) against the SM-load
# gather (DECDEC_NO_BULK=1: n_dec blocks, compensated qkv at split-K 4), same binary, same machine.
N=.device/decdec
timeout 300 $N gpu-test --model models/stories260K --text .device/data/tinystories-sample.txt --ctx 512 --chunks 8 > $OUT/h200-gpu-test-exp70-s15.txt 2>&1; echo "gpu-test rc $?"
grep -E "FAIL|checks|rror|panic" $OUT/h200-gpu-test-exp70-s15.txt | tail -12 | cut -c1-150
for v in bulk loads; do
  E=""; [ $v = loads ] && E="DECDEC_NO_BULK=1"
  env $E timeout 200 $N bench kernels --shapes llama3-8b --bits 3,4 --k-chunk 4,8 --n-dec 32,64 --no-lut --no-coop > $OUT/h200-bench-kernels-exp70-$v-s15.txt 2>&1; echo "== kernels $v rc $?"
  grep -A40 "layer sums" $OUT/h200-bench-kernels-exp70-$v-s15.txt | grep -E "uniform [34]-bit g128  |producer of x|fused \(best" | cut -c1-110
  grep -E "phases|DEC gather" $OUT/h200-bench-kernels-exp70-$v-s15.txt | head -8 | cut -c1-150
done
for v in bulk loads bulk loads; do
  E=""; [ $v = loads ] && E="DECDEC_NO_BULK=1"
  env $E timeout 150 $N bench decode --model synthetic:llama3-8b --bits 3 --k-chunk 0,4,8 --tokens 256 --prompt 0 > $OUT/d.txt 2>&1; echo "== decode $v bits 3 rc $?"
  cat $OUT/d.txt >> $OUT/h200-bench-decode-exp70-$v-s15.txt
  grep -E "^k_chunk|rror" $OUT/d.txt | cut -c1-100
done
for v in ndec16 ndec4; do
  E="DECDEC_BULK_NDEC=${v#ndec}"
  env $E timeout 150 $N bench decode --model synthetic:llama3-8b --bits 3 --k-chunk 4,8 --tokens 256 --prompt 0 > $OUT/d.txt 2>&1; echo "== decode $v bits 3 rc $?"
  cat $OUT/d.txt >> $OUT/h200-bench-decode-exp70-bulk-s15.txt
  grep -E "^k_chunk|rror" $OUT/d.txt | cut -c1-100
done
rm -f $OUT/d.txt
