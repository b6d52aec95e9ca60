#!/bin/bash
# run LF (session 16, experiment 80): where the one-block attention (faster since experiments 76/78)
# should hand over to the split-KV kernel: tokens/s after 256-1024 positions with the split kernel
# from 512 (default), from 1024 or 1536 with more value rows staged.
N=.device/decdec
b() { # label env...
  local l=$1; shift
  env "$@" timeout 250 $N bench decode --model synthetic:llama3-8b --bits 3 --k-chunk 0 --tokens 256 --depth 256,512,768,1024 > $OUT/d.txt 2>&1; echo "== $l rc $?"
  cat $OUT/d.txt >> $OUT/h200-bench-decode-tiers-exp80-s16.txt
  grep -E "depth|rror" $OUT/d.txt | cut -c1-80
}
for i in 1 2; do
  b "default (split from 512)"
  b "single to 1024, 256 rows" DECDEC_ATTN=1024
  b "single to 1024, 512 rows" DECDEC_ATTN=1024 DECDEC_ATTN_VROWS=512
  b "single to 1536, 768 rows" DECDEC_ATTN=1536 DECDEC_ATTN_VROWS=768
done
rm -f $OUT/d.txt
