#!/bin/bash
# run GG (session 11): experiment 53e, split-KV attention tuning: passes in flight (ATTN_SVU 4/8)
# x splits (16 = default, 33, 8) at depth 1024 / 4096, 3-bit
D=.device/decdec
dec() { tag=$1; shift; timeout 150 $D bench decode --model synthetic:llama3-8b --prompt 0 --tokens 256 --bits 3 --k-chunk 0 --depth 1024,4096 > $OUT/dec_$tag.txt 2>&1; echo "== $tag rc $?"; grep -E "^k_chunk|rror" $OUT/dec_$tag.txt | cut -c1-70; }
dec svu4_s16
DECDEC_DEFINES=ATTN_SVU=8 dec svu8_s16
DECDEC_ATTN_SPLITS=33 dec svu4_s33
DECDEC_DEFINES=ATTN_SVU=8 DECDEC_ATTN_SPLITS=33 dec svu8_s33
DECDEC_ATTN_SPLITS=8 dec svu4_s8
DECDEC_DEFINES=ATTN_SVU=2 dec svu2_s16
dec svu4_s16_again
