#!/bin/bash
# run GM (session 11): experiment 53h, three attention tiers (one block per head < 256, split with
# one head per block < 1536, split with the GQA group's heads per block beyond): decode at depths
# against the two-tier setting of run GI (DECDEC_ATTN=512), gpu-test (default and with the tiers
# moved down so that the 512-token ppl crosses all three graphs)
D=.device/decdec
dec() { tag=$1; shift; timeout 150 $D bench decode --model synthetic:llama3-8b --prompt 0 --tokens 256 "$@" > $OUT/dec_$tag.txt 2>&1; echo "== $tag ($*) rc $?"; grep -E "^k_chunk|rror" $OUT/dec_$tag.txt | cut -c1-105; }
dec tiers3 --bits 3 --k-chunk 0,4 --depth 0,256,512,1024,2048,4096 --json $OUT/h200-bench-decode-tiers-s11.json
DECDEC_ATTN=512 dec two_tier3 --bits 3 --k-chunk 0 --depth 256,512,1024,2048,4096
dec tiers16 --bits 16 --k-chunk 0 --depth 0,1024,4096
timeout 300 $D gpu-test --model models/stories260K --text .device/data/tinystories-sample.txt --ctx 512 --chunks 8 > $OUT/h200-gpu-test-tiers-s11.txt 2>&1; echo "gpu-test rc $?"
grep -E "FAIL|checks|rror|panic" $OUT/h200-gpu-test-tiers-s11.txt | tail -4
