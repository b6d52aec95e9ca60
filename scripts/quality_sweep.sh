#!/usr/bin/env bash
# Regenerates docs/quality.md and docs/quality.svg: quantizes stories260K and SmolLM2-135M with
# rtn/awq/lut at 3, 3.5 and 4 bits and measures perplexity against k_chunk and the selection method.
# Resumable: artifacts and results live in $WORK (default: target/quality); re-running skips what is
# done. CPU-heavy (about 1 h on 2 cores): run it with `nice`.
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${WORK:-target/quality}
SHARED=${SHARED:-../shared}
cargo build --release -p decdec-cli
BIN="${CARGO_TARGET_DIR:-target}/release/decdec"

$BIN quality run --label stories260K -m models/stories260K \
  --text "$SHARED/corpora/tinystories-sample.txt" --calib "$SHARED/corpora/tinyshakespeare.txt" \
  --work "$WORK/stories260K" --ctx 512 --full-chunks 30 --quick-chunks 30

$BIN quality run --label SmolLM2-135M \
  -m "$SHARED/models/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf" \
  --text "$SHARED/corpora/wikitext2-test-nonempty.txt" --calib "$SHARED/corpora/tinyshakespeare.txt" \
  --work "$WORK/smollm2" --ctx 512 --full-chunks 32 --quick-chunks 4 --reference-check

mkdir -p docs/quality-data
cp "$WORK/smollm2/results.jsonl" docs/quality-data/smollm2.jsonl
cp "$WORK/stories260K/results.jsonl" docs/quality-data/stories260K.jsonl
$BIN quality report --results docs/quality-data/smollm2.jsonl --results docs/quality-data/stories260K.jsonl \
  --out docs/quality.md --plot docs/quality.svg
