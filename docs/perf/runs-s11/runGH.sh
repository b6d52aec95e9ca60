#!/bin/bash
# run GH (session 11): experiment 53e continued, ATTN_SVU 2 with 33 / 64 splits, depth 512 / 1024 / 4096
D=.device/decdec
dec() { tag=$1; shift; timeout 150 $D bench decode --model synthetic:llama3-8b --prompt 0 --tokens 256 --bits 3 --k-chunk 0 --depth 512,1024,4096 > $OUT/dec_$tag.txt 2>&1; echo "== $tag rc $?"; grep -E "^k_chunk|rror" $OUT/dec_$tag.txt | cut -c1-70; }
dec svu4_s16
DECDEC_DEFINES=ATTN_SVU=2 DECDEC_ATTN_SPLITS=33 dec svu2_s33
DECDEC_DEFINES=ATTN_SVU=2 DECDEC_ATTN_SPLITS=64 dec svu2_s64
DECDEC_ATTN_SPLITS=33 dec svu4_s33
DECDEC_DEFINES=ATTN_SVU=2 dec svu2_s16
DECDEC_DEFINES=ATTN_SVU=2 DECDEC_ATTN_SPLITS=33 DECDEC_ATTN=256 timeout 300 $D gpu-test --model models/stories260K --text .device/data/tinystories-sample.txt --ctx 512 --chunks 8 > $OUT/gpu-test-svu2.log 2>&1; echo "gpu-test svu2 rc $?"
grep -E "FAIL|checks|rror|panic" $OUT/gpu-test-svu2.log | tail -5
