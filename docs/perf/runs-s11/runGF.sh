#!/bin/bash
# run GF (session 11): experiment 53d, the decode step switches to the split-KV attention from
# position 512 (two captured graphs); decode at depths, gpu-test default and with the switch at 256
D=.device/decdec
nvidia-smi --query-gpu=name,clocks.sm,clocks.mem --format=csv,noheader
dec() { tag=$1; shift; timeout 150 $D bench decode --model synthetic:llama3-8b --prompt 0 --tokens 256 "$@" > $OUT/dec_$tag.txt 2>&1; echo "== $tag ($*) rc $?"; grep -E "^k_chunk|rror" $OUT/dec_$tag.txt | cut -c1-105; }
dec hybrid3 --bits 3 --k-chunk 0,4 --depth 0,512,1024,4096 --json $OUT/h200-bench-decode-depth-s11.json
DECDEC_ATTN=single dec single3 --bits 3 --k-chunk 0 --depth 0,512,1024,4096
dec hybrid16 --bits 16 --k-chunk 0 --depth 0,4096
DECDEC_ATTN=single dec single16 --bits 16 --k-chunk 0 --depth 0,4096
dec hybrid4 --bits 4 --k-chunk 0 --depth 0,4096
timeout 300 $D gpu-test --model models/stories260K --text .device/data/tinystories-sample.txt --ctx 512 --chunks 8 --out $OUT/h200-gpu-test-s11.txt > $OUT/gpu-test.log 2>&1; echo "gpu-test rc $?"
grep -E "^ppl|FAIL|checks|rror|panic" $OUT/gpu-test.log | tail -10
DECDEC_ATTN=256 timeout 300 $D gpu-test --model models/stories260K --text .device/data/tinystories-sample.txt --ctx 512 --chunks 8 > $OUT/gpu-test-switch256.log 2>&1; echo "gpu-test switch 256 rc $?"
grep -E "^ppl|FAIL|checks|rror|panic" $OUT/gpu-test-switch256.log | tail -10
