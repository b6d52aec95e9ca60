#!/bin/bash
# run IA (session 13): quantized head (--head-bits) on the H200: gpu-test parity, decode, CLI ppl; 4-bit ring depth A/B
D=.device/decdec
nvidia-smi --query-gpu=name,memory.total,clocks.sm,clocks.max.sm,clocks.mem --format=csv,noheader
timeout 300 $D gpu-test --model models/stories260K --text .device/data/tinystories-sample.txt --ctx 512 --chunks 8 > $OUT/h200-gpu-test-s13.txt 2>&1; echo "gpu-test rc $?"
grep -E "FAIL|checks|rror|panic|ppl" $OUT/h200-gpu-test-s13.txt | tail -24 | cut -c1-200
for hb in none 4 3; do
  HB=""; [ $hb != none ] && HB="--head-bits $hb"
  timeout 150 $D bench decode --model synthetic:llama3-8b --bits 3 --k-chunk 0,4 --tokens 256 --prompt 512 $HB >> $OUT/h200-bench-decode-head-s13.txt 2>&1; echo "== decode 3-bit head $hb rc $?"
done
timeout 150 $D bench decode --model synthetic:llama3-8b --bits 4 --k-chunk 0 --tokens 256 --prompt 0 --head-bits 4 >> $OUT/h200-bench-decode-head-s13.txt 2>&1; echo "== decode 4-bit head 4 rc $?"
timeout 150 $D bench decode --model synthetic:llama3-8b --bits 16 --k-chunk 0 --tokens 256 --prompt 0 >> $OUT/h200-bench-decode-head-s13.txt 2>&1; echo "== decode 16 rc $?"
grep -E "^device|^k_chunk|rror" $OUT/h200-bench-decode-head-s13.txt | cut -c1-160
for hb in none 4; do
  HB=""; [ $hb != none ] && HB="--head-bits $hb"
  for dev in cpu cuda; do
    timeout 60 $D ppl --model models/stories260K --text .device/data/tinystories-sample.txt --ctx 512 --json --device $dev $HB 2>&1 | tail -1 | sed "s/^/ppl head $hb $dev: /" >> $OUT/h200-cli-head-s13.txt
  done
done
cat $OUT/h200-cli-head-s13.txt
for st in 2 3; do
  DECDEC_STAGES=$st timeout 120 $D bench kernels --shapes llama3-8b --bits 4 --k-chunk 0 --no-lut --no-coop > $OUT/h200-stages$st-4bit-s13.txt 2>&1; echo "== stages $st rc $?"
  grep -E "^  uniform 4-bit g128  |^uniform 4-bit g128  |layer" $OUT/h200-stages$st-4bit-s13.txt | head -8 | cut -c1-130
done
