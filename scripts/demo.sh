#!/usr/bin/env bash
# The main job on the bundled model, on a fresh clone: build, generate with the original model,
# quantize to 3 bits (AWQ) with residuals and thresholds, then measure perplexity without and with
# dynamic error compensation, and generate with compensation on.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p decdec-cli
B="${CARGO_TARGET_DIR:-target}/release/decdec"
M=models/stories260K
Q=target/demo/stories260K-awq3
TEXT=data/tinystories-sample.txt

echo "== original model"
$B inspect $M
$B generate --model $M --prompt "Once upon a time" --max-tokens 48
$B ppl --model $M --text $TEXT --ctx 512

echo "== decdec quantize: calibrate, AWQ 3-bit, 4-bit residuals, thresholds"
$B quantize --model $M --out $Q --method awq --bits 3 --calib data/tinyshakespeare.txt --force
$B inspect $Q

echo "== perplexity: 3-bit without compensation, then with k_chunk 8 and 32"
for k in 0 8 32; do
    $B ppl --model $Q --text $TEXT --ctx 512 --k-chunk $k
done

echo "== generation with compensation"
$B generate --model $Q --prompt "Once upon a time" --max-tokens 48 --k-chunk 32
