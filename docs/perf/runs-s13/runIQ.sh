#!/bin/bash
# run IQ (session 13): greedy generate through the on-GPU argmax (Engine::forward_greedy) vs the CPU engine
D=.device/decdec
Q=/tmp/stories-rtn3
$D quantize --model models/stories260K --out $Q --method rtn --bits 3 --calib .device/data/tinystories-sample.txt --calib-samples 16 --quiet --force 2>&1 | tail -1
for m in models/stories260K $Q; do
  for k in 0 64; do
    [ $m = models/stories260K ] && [ $k = 64 ] && continue
    KC=""; [ $k != 0 ] && KC="--k-chunk $k"
    for dev in cpu cuda; do
      $D generate --model $m --prompt "Once upon a time" --max-tokens 120 $KC --device $dev > /tmp/g-$dev.txt 2>/tmp/g-$dev.err; echo "$m k $k $dev rc $?: $(tail -1 /tmp/g-$dev.err)"
    done
    cmp -s /tmp/g-cpu.txt /tmp/g-cuda.txt && echo "   same text ($(wc -c < /tmp/g-cpu.txt) bytes)" || { echo "   DIFFERENT"; head -c 300 /tmp/g-cpu.txt; echo; head -c 300 /tmp/g-cuda.txt; echo; }
  done
done
$D generate --model $Q --prompt "Once upon a time" --max-tokens 40 --temperature 0.8 --top-p 0.9 --seed 3 --device cuda 2>&1 | tail -2
$D generate --model models/stories260K --prompt "Once upon a time" --max-tokens 40 --head-bits 8 --device cuda 2>&1 | tail -2
$D generate --model models/stories260K --prompt "Once upon a time" --max-tokens 40 --head-bits 8 --device cpu 2>&1 | tail -2
