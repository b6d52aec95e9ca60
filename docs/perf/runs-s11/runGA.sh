#!/bin/bash
# run GA (session 11): experiment 53, split-KV decode attention (default) vs one block per query
# head (DECDEC_ATTN=single), decode tokens/s at context depths 0 / 1024 / 4096; gpu-test
D=.device/decdec
nvidia-smi --query-gpu=name,clocks.sm,clocks.mem --format=csv,noheader
dec() { tag=$1; shift; timeout 150 $D bench decode --model synthetic:llama3-8b --prompt 0 --tokens 256 "$@" > $OUT/dec_$tag.txt 2>&1; echo "== $tag ($*) rc $?"; grep -E "^k_chunk|rror" $OUT/dec_$tag.txt | cut -c1-110; }
dec split3 --bits 3 --k-chunk 0,4 --depth 0,1024,4096
DECDEC_ATTN=single dec single3 --bits 3 --k-chunk 0,4 --depth 0,1024,4096
dec split16 --bits 16 --k-chunk 0 --depth 0,4096
DECDEC_ATTN=single dec single16 --bits 16 --k-chunk 0 --depth 0,4096
DECDEC_ABLATE_SKIP=attn dec skipattn3 --bits 3 --k-chunk 0 --depth 0,4096
timeout 300 $D gpu-test --model models/stories260K --text .device/data/tinystories-sample.txt --ctx 512 --chunks 8 --out $OUT/h200-gpu-test-s11.txt > $OUT/gpu-test.log 2>&1; echo "gpu-test rc $?"
grep -E "^ppl|FAIL|checks|rror|panic" $OUT/gpu-test.log | tail -14
grep -E "split attention" $OUT/gpu-test.log | head -80 | cut -c1-150
