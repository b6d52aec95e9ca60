#!/bin/bash
# run MB (prepared in session 18, when no GPU was lent): experiment 82, the decode step's
# timeline (`bench decode --timeline`). Run after run MA (its gpu-test holds the timeline checks:
# the stamped kernels' logits bit-identical to the plain ones', the records matched to the
# captured launches, no wait released before the previous kernel's end).
# Build here: cargo build --release -p decdec-cli && mkdir -p .device && strip -o .device/decdec target/release/decdec
# Files back (at most 8): h200-timeline-s18.txt (all outputs) + a .json and an .svg per call.
N=.device/decdec
tl() { # label file args...
  local l=$1 f=$2; shift 2
  echo "== $l: $*" >> $OUT/h200-timeline-s18.txt
  timeout 280 $N bench decode --model synthetic:llama3-8b --prompt 0 --tokens 128 --timeline $OUT/$f.json --timeline-svg $OUT/$f.svg "$@" > $OUT/t.txt 2>&1; echo "== $l rc $?"
  cat $OUT/t.txt >> $OUT/h200-timeline-s18.txt
  grep -E "^(k_chunk|timeline|  )|rror" $OUT/t.txt | sed -E "s/ +/ /g" | cut -c1-200
}
# 3-bit without and with DEC (k_chunk 4 everywhere), at depth 0 and 4096
tl "3-bit k_chunk 0,4 depth 0,4096" h200-timeline-3bit-s18 --bits 3 --k-chunk 0,4 --depth 0,4096
# the 16-bit baseline of the 3.5x bar
tl "16-bit" h200-timeline-16bit-s18 --bits 16 --k-chunk 0
# the tensor-core split attention (experiment 81) at depth, if run MA kept it opt-in
DECDEC_ATTN_KERNEL=tc tl "3-bit tc attention depth 4096" h200-timeline-tc-s18 --bits 3 --k-chunk 0 --depth 4096
rm -f $OUT/t.txt
