#!/bin/bash
# run FE (session 10): experiment 51b, the early dependent launch per projection group in the decode step
D=.device/decdec
dec() { DECDEC_EARLY_GROUPS=$1 timeout 90 $D bench decode --model synthetic:llama3-8b --bits $2 --k-chunk $3 --tokens 256 > $OUT/dec_$1_$2.txt 2>&1; echo "== groups [$1] bits $2 rc $?"; grep -E "^k_chunk|rror" $OUT/dec_$1_$2.txt | cut -c1-100; }
dec none 3 0; dec qkv 3 0; dec o 3 0; dec d 3 0; dec gu 3 0; dec none 3 0; dec qkv 3 0
dec qkv,o 3 0; dec qkv,d 3 0
