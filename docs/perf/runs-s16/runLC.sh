#!/bin/bash
# run LC (session 16): why the token-by-token perplexities of gpu-test moved with experiment 78
# (fused RoPE by default): the same gpu-test under knobs that switch parts of the fused path off.
N=.device/decdec
t() { # label env...
  local l=$1; shift
  env "$@" timeout 200 $N gpu-test --seed 1 --model models/stories260K --text .device/data/tinystories-sample.txt --ctx 512 --chunks 8 > $OUT/g.txt 2>&1; echo "== $l rc $?"
  grep -E "^ppl|checks" $OUT/g.txt | sed 's/  */ /g' | cut -c1-160 | head -7
  cp $OUT/g.txt "$OUT/h200-gpu-test-LC-$(echo $l | tr ' =' '__')-s16.txt"
}
t "fused"
t "ROPE_LAUNCH" DECDEC_ROPE_LAUNCH=1
t "fused VROWS=0" DECDEC_ATTN_VROWS=0
t "fused NO_GUESS" DECDEC_DEFINES=ATTN_NO_GUESS=1
t "ROPE_LAUNCH NO_GUESS" DECDEC_ROPE_LAUNCH=1 DECDEC_DEFINES=ATTN_NO_GUESS=1
t "fused again"
rm -f $OUT/g.txt
