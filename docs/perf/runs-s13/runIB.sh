#!/bin/bash
# run IB (session 13): 8-bit head (head_u8_gemv): gpu-test (kernel vs CPU twin, ppl parity), decode, CLI ppl
D=.device/decdec
nvidia-smi --query-gpu=name,memory.total,clocks.sm,clocks.max.sm,clocks.mem --format=csv,noheader
timeout 300 $D gpu-test --model models/stories260K --text .device/data/tinystories-sample.txt --ctx 512 --chunks 8 > $OUT/h200-gpu-test-head8-s13.txt 2>&1; echo "gpu-test rc $?"
grep -E "FAIL|checks|rror|panic|8-bit head|ppl parity dense, 8" $OUT/h200-gpu-test-head8-s13.txt | tail -30 | cut -c1-200
for hb in none 8 4; do
  HB=""; [ $hb != none ] && HB="--head-bits $hb"
  timeout 150 $D bench decode --model synthetic:llama3-8b --bits 3 --k-chunk 0,4 --tokens 256 --prompt 512 $HB >> $OUT/h200-bench-decode-head8-s13.txt 2>&1; echo "== decode 3-bit head $hb rc $?"
done
timeout 150 $D bench decode --model synthetic:llama3-8b --bits 4 --k-chunk 0 --tokens 256 --prompt 0 --head-bits 8 >> $OUT/h200-bench-decode-head8-s13.txt 2>&1; echo "== decode 4-bit head 8 rc $?"
grep -E "^device|^k_chunk|rror" $OUT/h200-bench-decode-head8-s13.txt | cut -c1-160
for hb in 8; do
  for dev in cpu cuda; do
    timeout 60 $D ppl --model models/stories260K --text .device/data/tinystories-sample.txt --ctx 512 --json --device $dev --head-bits $hb 2>&1 | tail -1 | sed "s/^/ppl head $hb $dev: /" >> $OUT/h200-cli-head8-s13.txt
  done
done
timeout 60 $D generate --model models/stories260K --prompt "Once upon a time" --max-tokens 40 --device cuda --head-bits 8 >> $OUT/h200-cli-head8-s13.txt 2>&1
timeout 60 $D generate --model models/stories260K --prompt "Once upon a time" --max-tokens 40 --device cpu --head-bits 8 >> $OUT/h200-cli-head8-s13.txt 2>&1
cat $OUT/h200-cli-head8-s13.txt
