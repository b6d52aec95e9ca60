#!/bin/bash
# run GL (session 11): experiment 53g continued: switch at 256 with 1 or 2 query heads per block,
# depth 0 / 256 / 1024 / 4096, against the default
D=.device/decdec
dec() { tag=$1; shift; timeout 150 $D bench decode --model synthetic:llama3-8b --prompt 0 --tokens 256 --bits 3 --k-chunk 0 --depth 0,256,1024,4096 > $OUT/dec_$tag.txt 2>&1; echo "== $tag rc $?"; grep -E "^k_chunk|rror" $OUT/dec_$tag.txt | cut -c1-70; }
dec default
DECDEC_ATTN=256 DECDEC_ATTN_GB=1 dec sw256_gb1
DECDEC_ATTN=256 DECDEC_ATTN_GB=2 dec sw256_gb2
DECDEC_ATTN=256 DECDEC_ATTN_GB=1 DECDEC_ATTN_SPLITS=16 dec sw256_gb1_s16
