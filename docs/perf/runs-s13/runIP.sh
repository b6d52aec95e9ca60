#!/bin/bash
# run IP (session 13): the user path on the GPU machine: decdec quantize --head-bits 8 (manifest), ppl cpu vs cuda, generate
D=.device/decdec
Q=/tmp/stories-rtn3-head8
$D quantize --model models/stories260K --out $Q --method rtn --bits 3 --calib .device/data/tinystories-sample.txt --calib-samples 16 --quiet --head-bits 8 --force 2>&1 | tail -1
$D inspect $Q | grep -E "quantized|head"
for k in 0 64; do
  for dev in cpu cuda; do
    echo "k_chunk $k $dev: $($D ppl --model $Q --text .device/data/tinystories-sample.txt --ctx 512 --json --k-chunk $k --device $dev 2>&1 | tail -1)"
    echo "k_chunk $k $dev, --head-bits 16: $($D ppl --model $Q --text .device/data/tinystories-sample.txt --ctx 512 --json --k-chunk $k --device $dev --head-bits 16 2>&1 | tail -1)"
  done
done
$D generate --model $Q --prompt "Once upon a time" --max-tokens 32 --k-chunk 64 --device cuda 2>&1 | tail -2
$D generate --model $Q --prompt "Once upon a time" --max-tokens 32 --k-chunk 64 --device cpu 2>&1 | tail -2
