#!/bin/bash
# run IR (session 13): greedy k_chunk 64 text, CUDA through forward_greedy (new) vs logits + host argmax (previous binary) vs CPU
Q=/tmp/stories-rtn3
.device/decdec quantize --model models/stories260K --out $Q --method rtn --bits 3 --calib .device/data/tinystories-sample.txt --calib-samples 16 --quiet --force 2>&1 | tail -1
for b in decdec decdec_old; do
  for dev in cpu cuda; do
    .device/$b generate --model $Q --prompt "Once upon a time" --max-tokens 120 --k-chunk 64 --device $dev > /tmp/g-$b-$dev.txt 2>/dev/null; echo "$b $dev rc $?"
  done
done
for f in decdec-cuda decdec_old-cpu decdec_old-cuda; do cmp -s /tmp/g-decdec-cpu.txt /tmp/g-$f.txt && echo "new cpu == $f" || echo "new cpu != $f"; done
cmp -s /tmp/g-decdec-cuda.txt /tmp/g-decdec_old-cuda.txt && echo "new cuda == old cuda" || echo "new cuda != old cuda"
