#!/bin/bash
# run GK (session 11): experiment 53g, the split-KV attention with fewer query heads per block
# (DECDEC_ATTN_GB) at short contexts: is there a split layout that beats the one-block kernel?
D=.device/decdec
dec() { tag=$1; shift; timeout 150 $D bench decode --model synthetic:llama3-8b --prompt 0 --tokens 256 --bits 3 --k-chunk 0 --depth 0,256,1024 > $OUT/dec_$tag.txt 2>&1; echo "== $tag rc $?"; grep -E "^k_chunk|rror" $OUT/dec_$tag.txt | cut -c1-70; }
dec default
DECDEC_ATTN=split DECDEC_ATTN_GB=1 dec split_gb1
DECDEC_ATTN=split DECDEC_ATTN_GB=1 DECDEC_ATTN_SPLITS=16 dec split_gb1_s16
DECDEC_ATTN=split DECDEC_ATTN_GB=2 dec split_gb2
DECDEC_ATTN=split dec split_gb4
DECDEC_ATTN_GB=2 dec hybrid_gb2
