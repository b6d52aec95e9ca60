#!/bin/bash
# run IK (session 13): experiment 60, ncu of the one-block attention with and without fused RoPE at position 256
D=.device/decdec
NCU=$(which ncu || ls /usr/local/cuda*/bin/ncu 2>/dev/null | head -1)
for f in none rope; do
  DECDEC_FUSE=$f timeout 200 $NCU --graph-profiling node --clock-control none -k regex:"^attn_(rope_)?decode" --launch-skip 64 --launch-count 1 \
    --section SpeedOfLight --section WarpStateStats --section SourceCounters --section LaunchStats --section Occupancy \
    $D bench decode --model synthetic:llama3-8b --prompt 0 --tokens 2 --bits 3 --k-chunk 0 --depth 256 > $OUT/h200-exp60-ncu-$f-s13.txt 2>&1; echo "== ncu $f rc $?"
  grep -E "attn_|Duration|Registers Per|Achieved Occupancy|Warp Cycles Per Issued|Dynamic Shared|Block Limit|stall|Stall" $OUT/h200-exp60-ncu-$f-s13.txt | head -24 | cut -c1-150
done
