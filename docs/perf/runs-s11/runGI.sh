#!/bin/bash
# run GI (session 11): final tree (defaults after experiment 53e): gpu-test, decode at depths
D=.device/decdec
nvidia-smi --query-gpu=name,clocks.sm,clocks.mem --format=csv,noheader
dec() { tag=$1; shift; timeout 150 $D bench decode --model synthetic:llama3-8b --prompt 0 --tokens 256 "$@" > $OUT/dec_$tag.txt 2>&1; echo "== $tag ($*) rc $?"; grep -E "^k_chunk|rror" $OUT/dec_$tag.txt | cut -c1-110; }
dec final3 --bits 3 --k-chunk 0,4 --depth 0,512,1024,4096
dec final16 --bits 16 --k-chunk 0 --depth 0,4096
timeout 300 $D gpu-test --model models/stories260K --text .device/data/tinystories-sample.txt --ctx 512 --chunks 8 > $OUT/h200-gpu-test-final-s11.txt 2>&1; echo "gpu-test rc $?"
grep -E "^ppl|FAIL|checks|rror|panic" $OUT/h200-gpu-test-final-s11.txt | tail -10
