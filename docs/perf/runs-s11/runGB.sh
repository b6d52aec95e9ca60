#!/bin/bash
# run GB (session 11): experiment 53 diagnosis, standalone durations and launch statistics of the
# decode attention kernels (split-KV vs one block per query head) at depth 0 and 4096 (ncu, graph nodes)
D=.device/decdec
NCU=$(which ncu || ls /usr/local/cuda*/bin/ncu 2>/dev/null | head -1)
prof() { tag=$1; skip=$2; shift 2; timeout 200 $NCU --graph-profiling node --kernel-name regex:'attn_(split_)?decode' --launch-skip $skip --launch-count 4 --section SpeedOfLight --section LaunchStats --section Occupancy --section WarpStateStats $D bench decode --model synthetic:llama3-8b --prompt 0 --tokens 8 --bits 3 --k-chunk 0 "$@" > $OUT/ncu_$tag.txt 2>&1; echo "== $tag rc $?"; grep -E "attn_|Duration|Registers Per|Shared Memory Config|Dynamic Shared|Achieved Occupancy|Grid Size|Memory Throughput|Warp Cycles Per Issued|Stall" $OUT/ncu_$tag.txt | head -40; }
prof split0 120 --depth 0
DECDEC_ATTN=single prof single0 120 --depth 0
prof split4k 300 --depth 4096
DECDEC_ATTN=single prof single4k 300 --depth 4096
