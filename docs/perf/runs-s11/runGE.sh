#!/bin/bash
# run GE (session 11): experiment 53c, split-KV attention with warp-uniform early outs and
# interleaved shuffles; decode A/B at depths, ncu at depth 0, gpu-test
D=.device/decdec
dec() { tag=$1; shift; timeout 150 $D bench decode --model synthetic:llama3-8b --prompt 0 --tokens 256 "$@" > $OUT/dec_$tag.txt 2>&1; echo "== $tag ($*) rc $?"; grep -E "^k_chunk|rror" $OUT/dec_$tag.txt | cut -c1-100; }
dec split3 --bits 3 --k-chunk 0 --depth 0,512,1024,4096
DECDEC_ATTN=single dec single3 --bits 3 --k-chunk 0 --depth 0,512
DECDEC_ABLATE_SKIP=attn dec skip3 --bits 3 --k-chunk 0 --depth 0
NCU=$(which ncu || ls /usr/local/cuda*/bin/ncu 2>/dev/null | head -1)
timeout 200 $NCU --graph-profiling node --cache-control none --kernel-name regex:'attn_(split_)?decode' --launch-skip 120 --launch-count 2 --metrics regex:'smsp__average_warps_issue_stalled_.*_per_issue_active\.ratio$',gpu__time_duration.sum,smsp__inst_executed.sum,sm__cycles_active.avg,sm__cycles_active.max $D bench decode --model synthetic:llama3-8b --prompt 0 --tokens 8 --bits 3 --k-chunk 0 > $OUT/ncu_split0.txt 2>&1
grep -E "attn_|duration|inst_executed|cycles_active|stalled" $OUT/ncu_split0.txt | awk '{ if ($NF+0 > 0.3 || $0 ~ /attn_|duration|inst_exec|cycles_active/) print }' | head -14
timeout 300 $D gpu-test --model models/stories260K --text .device/data/tinystories-sample.txt --ctx 512 --chunks 8 --out $OUT/h200-gpu-test-s11.txt > $OUT/gpu-test.log 2>&1; echo "gpu-test rc $?"
grep -E "FAIL|checks|rror|panic" $OUT/gpu-test.log | tail -5
