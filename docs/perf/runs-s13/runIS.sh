#!/bin/bash
# run IS (session 13): the review refactor (dense_gemv helper, 8-bit head occupancy at construction) on the GPU
D=.device/decdec
timeout 300 $D gpu-test --model models/stories260K --text .device/data/tinystories-sample.txt --ctx 512 --chunks 8 > $OUT/h200-gpu-test-review-s13.txt 2>&1; echo "gpu-test rc $?"
grep -E "FAIL|checks|rror|panic" $OUT/h200-gpu-test-review-s13.txt | tail -4 | cut -c1-160
for hb in none 8; do
  HB=""; [ $hb != none ] && HB="--head-bits $hb"
  timeout 150 $D bench decode --model synthetic:llama3-8b --bits 3 --k-chunk 0 --tokens 256 --prompt 0 $HB 2>&1 | grep -E "^k_chunk|rror" | cut -c1-80
done
timeout 150 $D bench decode --model synthetic:llama3-8b --bits 16 --k-chunk 0 --tokens 64 --prompt 0 2>&1 | grep -E "^k_chunk|rror" | cut -c1-80
$D generate --model models/stories260K --prompt "Once upon a time" --max-tokens 40 --head-bits 8 --device cuda 2>&1 | tail -2
