#!/bin/bash
# run LG (session 16, experiment 80): the one-block attention as two tiers (below 256 positions 256
# staged value rows, from 256 on 512) against the previous plan (one tier to 512 with 256 rows:
# DECDEC_ATTN=512 DECDEC_ATTN_VROWS=256), one tier with 512 rows (DECDEC_ATTN=512) and the split
# kernel from 256 (DECDEC_ATTN=256); gpu-test on the new plan (its 512-token chunks cross tiers).
N=.device/decdec
timeout 250 $N gpu-test --model models/stories260K --text .device/data/tinystories-sample.txt --ctx 512 --chunks 8 > $OUT/h200-gpu-test-exp80-s16.txt 2>&1; echo "gpu-test rc $?"
grep -E "FAIL|checks|rror|panic" $OUT/h200-gpu-test-exp80-s16.txt | tail -6 | cut -c1-150
grep -E "^ppl" $OUT/h200-gpu-test-exp80-s16.txt | sed 's/  */ /g' | cut -c1-160 | head -6
b() { # label env...
  local l=$1; shift
  env "$@" timeout 250 $N bench decode --model synthetic:llama3-8b --bits 3 --k-chunk 0 --tokens 256 --depth 0,256 > $OUT/d.txt 2>&1; echo "== $l rc $?"
  cat $OUT/d.txt >> $OUT/h200-bench-decode-tiers2-exp80-s16.txt
  grep -E "^k_chunk|rror" $OUT/d.txt | cut -c1-80
}
for i in 1 2; do
  b "new: tiers 0/256 (256/512 rows)"
  b "old: one tier, 256 rows" DECDEC_ATTN=512 DECDEC_ATTN_VROWS=256
  b "one tier, 512 rows" DECDEC_ATTN=512
  b "split from 256" DECDEC_ATTN=256
done
rm -f $OUT/d.txt
