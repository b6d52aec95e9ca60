#!/bin/bash
# run JH (session 14): review refactor of the GEMV prologue/refill (one copy_w / copy_x for both):
# gpu-test, kernel and decode A/B against the tree before it (base), same machine.
N=.device/decdec; B=.device/decdec-base
timeout 300 $N gpu-test --model models/stories260K --text .device/data/tinystories-sample.txt --ctx 512 --chunks 8 > $OUT/h200-gpu-test-review-s14.txt 2>&1; echo "gpu-test rc $?"
grep -E "FAIL|checks|rror|panic" $OUT/h200-gpu-test-review-s14.txt | tail -4 | cut -c1-200
for v in base new; do
  X=$N; [ $v = base ] && X=$B
  timeout 120 $X bench kernels --shapes llama3-8b --bits 3,4 --k-chunk 0 --no-lut --no-coop > $OUT/k.txt 2>&1; echo "== kernels $v rc $?"
  grep -E "^  (qkv|o|gate-up|down) +uniform [34]-bit g128 +[0-9]|^  uniform [34]-bit g128 +[0-9]" $OUT/k.txt | cut -c1-110 | tee -a $OUT/h200-review-ab-s14.txt
  timeout 100 $X bench decode --model synthetic:llama3-8b --bits 3 --k-chunk 0,4 --tokens 256 --prompt 0 > $OUT/d.txt 2>&1; echo "== decode $v rc $?"
  grep -E "^k_chunk|rror" $OUT/d.txt | cut -c1-100 | tee -a $OUT/h200-review-ab-s14.txt
done
rm -f $OUT/k.txt $OUT/d.txt
