#!/bin/bash
# run IC (session 13): 8-bit head with the loads of a row batched (HEAD_U8_BATCH 8, and 4 by define): decode, gpu-test
D=.device/decdec
for hb in none 8; do
  HB=""; [ $hb != none ] && HB="--head-bits $hb"
  timeout 150 $D bench decode --model synthetic:llama3-8b --bits 3 --k-chunk 0 --tokens 256 --prompt 0 $HB >> $OUT/h200-bench-decode-head8b-s13.txt 2>&1; echo "== decode 3-bit head $hb rc $?"
done
DECDEC_DEFINES=HEAD_U8_BATCH=4 timeout 150 $D bench decode --model synthetic:llama3-8b --bits 3 --k-chunk 0 --tokens 256 --prompt 0 --head-bits 8 >> $OUT/h200-bench-decode-head8b-s13.txt 2>&1; echo "== decode 3-bit head 8 batch 4 rc $?"
grep -E "^device|^k_chunk|rror" $OUT/h200-bench-decode-head8b-s13.txt | cut -c1-120
timeout 300 $D gpu-test --model models/stories260K --text .device/data/tinystories-sample.txt --ctx 512 --chunks 8 > $OUT/h200-gpu-test-head8b-s13.txt 2>&1; echo "gpu-test rc $?"
grep -E "FAIL|checks|rror|panic|8-bit head" $OUT/h200-gpu-test-head8b-s13.txt | tail -14 | cut -c1-160
