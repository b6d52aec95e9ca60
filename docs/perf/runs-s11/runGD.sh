#!/bin/bash
# run GD (session 11): experiment 53 diagnosis, stall reasons of the decode attention kernels at depth 0
D=.device/decdec
NCU=$(which ncu || ls /usr/local/cuda*/bin/ncu 2>/dev/null | head -1)
prof() { tag=$1; skip=$2; cc=$3; shift 3; timeout 200 $NCU --graph-profiling node --cache-control $cc --kernel-name regex:'attn_(split_)?decode' --launch-skip $skip --launch-count 2 --metrics regex:'smsp__average_warps_issue_stalled_.*_per_issue_active\.ratio$',gpu__time_duration.sum,smsp__inst_executed.sum,sm__cycles_active.avg,sm__cycles_active.max,smsp__warps_launched.sum $D bench decode --model synthetic:llama3-8b --prompt 0 --tokens 8 --bits 3 --k-chunk 0 "$@" > $OUT/ncu_$tag.txt 2>&1; echo "== $tag rc $?"; grep -E "attn_|duration|inst_executed|cycles_active|warps_launched|stalled" $OUT/ncu_$tag.txt | awk '{ if ($NF+0 > 0.05 || $0 ~ /attn_|duration|inst_exec|cycles_active|launched/) print }' | head -60; }
prof split0_all 120 all --depth 0
prof split0_none 120 none --depth 0
DECDEC_ATTN=single prof single0_none 120 none --depth 0
