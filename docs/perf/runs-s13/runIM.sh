#!/bin/bash
# run IM (session 13): 8-bit head occupancy: __launch_bounds__ min blocks (HEAD_U8_MINB) x batch
D=.device/decdec
for def in none HEAD_U8_MINB=8,HEAD_U8_BATCH=2 HEAD_U8_MINB=6,HEAD_U8_BATCH=2 HEAD_U8_MINB=6 HEAD_U8_MINB=8,HEAD_U8_BATCH=1 none; do
  DD=""; [ $def != none ] && DD=$def
  DECDEC_DEFINES=$DD timeout 150 $D bench decode --model synthetic:llama3-8b --bits 3 --k-chunk 0 --tokens 256 --prompt 0 --head-bits 8 > $OUT/m.txt 2>&1; echo "== $def rc $? $(grep -E '^k_chunk' $OUT/m.txt | cut -c1-60)"
  cat $OUT/m.txt >> $OUT/h200-exp58-occupancy-s13.txt
done
rm -f $OUT/m.txt
