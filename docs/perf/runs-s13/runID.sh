#!/bin/bash
# run ID (session 13): 8-bit head, x swizzled in shared memory (no bank conflicts); batch 4 / 8 / 2
D=.device/decdec
for hb in none 8; do
  HB=""; [ $hb != none ] && HB="--head-bits $hb"
  timeout 150 $D bench decode --model synthetic:llama3-8b --bits 3 --k-chunk 0 --tokens 256 --prompt 0 $HB >> $OUT/h200-bench-decode-head8c-s13.txt 2>&1; echo "== decode 3-bit head $hb rc $?"
done
DECDEC_DEFINES=HEAD_U8_BATCH=8 timeout 150 $D bench decode --model synthetic:llama3-8b --bits 3 --k-chunk 0 --tokens 256 --prompt 0 --head-bits 8 >> $OUT/h200-bench-decode-head8c-s13.txt 2>&1; echo "== decode 3-bit head 8 batch 8 rc $?"
DECDEC_DEFINES=HEAD_U8_BATCH=2 timeout 150 $D bench decode --model synthetic:llama3-8b --bits 3 --k-chunk 0 --tokens 256 --prompt 0 --head-bits 8 >> $OUT/h200-bench-decode-head8c-s13.txt 2>&1; echo "== decode 3-bit head 8 batch 2 rc $?"
grep -E "^device|^k_chunk|rror" $OUT/h200-bench-decode-head8c-s13.txt | cut -c1-120
timeout 300 $D gpu-test --model models/stories260K --text .device/data/tinystories-sample.txt --ctx 512 --chunks 8 > $OUT/h200-gpu-test-head8c-s13.txt 2>&1; echo "gpu-test rc $?"
grep -E "FAIL|checks|rror|panic|8-bit head gemv" $OUT/h200-gpu-test-head8c-s13.txt | tail -12 | cut -c1-160
