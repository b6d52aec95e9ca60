#!/bin/bash
# run GC (session 11): experiment 53b, split-KV decode attention with rolled loops (16-byte pieces,
# q in registers, one block per SM) vs one block per query head; ncu durations; gpu-test
D=.device/decdec
nvidia-smi --query-gpu=name,clocks.sm,clocks.mem --format=csv,noheader
dec() { tag=$1; shift; timeout 150 $D bench decode --model synthetic:llama3-8b --prompt 0 --tokens 256 "$@" > $OUT/dec_$tag.txt 2>&1; echo "== $tag ($*) rc $?"; grep -E "^k_chunk|rror" $OUT/dec_$tag.txt | cut -c1-110; }
dec split3 --bits 3 --k-chunk 0,4 --depth 0,1024,4096
DECDEC_ATTN=single dec single3 --bits 3 --k-chunk 0 --depth 0,4096
dec split16 --bits 16 --k-chunk 0 --depth 0,4096
NCU=$(which ncu || ls /usr/local/cuda*/bin/ncu 2>/dev/null | head -1)
prof() { tag=$1; skip=$2; shift 2; timeout 200 $NCU --graph-profiling node --kernel-name regex:'attn_(split_)?decode' --launch-skip $skip --launch-count 3 --section SpeedOfLight --section LaunchStats --section Occupancy $D bench decode --model synthetic:llama3-8b --prompt 0 --tokens 8 --bits 3 --k-chunk 0 "$@" > $OUT/ncu_$tag.txt 2>&1; echo "== $tag rc $?"; grep -E "Duration|Registers Per|Elapsed Cycles|SM Active" $OUT/ncu_$tag.txt | head -12; }
prof split0 120 --depth 0
prof split4k 300 --depth 4096
timeout 300 $D gpu-test --model models/stories260K --text .device/data/tinystories-sample.txt --ctx 512 --chunks 8 --out $OUT/h200-gpu-test-s11.txt > $OUT/gpu-test.log 2>&1; echo "gpu-test rc $?"
grep -E "^ppl|FAIL|checks|rror|panic" $OUT/gpu-test.log | tail -14
grep -E "split attention" $OUT/gpu-test.log | grep -v PASS | head
