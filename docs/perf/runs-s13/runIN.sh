#!/bin/bash
# run IN (session 13): the final tree on an H100: gpu-test, decode with f16 / 8-bit / 4-bit heads, 16-bit
D=.device/decdec
nvidia-smi --query-gpu=name,memory.total,clocks.sm,clocks.max.sm,clocks.mem --format=csv,noheader
timeout 300 $D gpu-test --model models/stories260K --text .device/data/tinystories-sample.txt --ctx 512 --chunks 8 > $OUT/h100-gpu-test-s13.txt 2>&1; echo "gpu-test rc $?"
grep -E "FAIL|checks|rror|panic" $OUT/h100-gpu-test-s13.txt | tail -4 | cut -c1-160
for hb in none 8 4; do
  HB=""; [ $hb != none ] && HB="--head-bits $hb"
  timeout 150 $D bench decode --model synthetic:llama3-8b --bits 3 --k-chunk 0,4 --tokens 256 --prompt 0 $HB >> $OUT/h100-bench-decode-head-s13.txt 2>&1; echo "== decode 3-bit head $hb rc $?"
done
timeout 150 $D bench decode --model synthetic:llama3-8b --bits 16 --k-chunk 0 --tokens 256 --prompt 0 >> $OUT/h100-bench-decode-head-s13.txt 2>&1; echo "== decode 16 rc $?"
grep -E "^device|^k_chunk|rror" $OUT/h100-bench-decode-head-s13.txt | cut -c1-110
