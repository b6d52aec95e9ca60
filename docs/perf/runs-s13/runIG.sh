#!/bin/bash
# run IG (session 13): ncu of the head kernels (f16 dense_gemv vs head_u8_gemv): time, DRAM, occupancy, warp stalls
D=.device/decdec
NCU=$(which ncu || ls /usr/local/cuda*/bin/ncu 2>/dev/null | head -1)
for hb in none 8; do
  HB=""; [ $hb != none ] && HB="--head-bits $hb"
  timeout 200 $NCU --graph-profiling node --clock-control none -k regex:"head_u8_gemv|dense_gemv" --launch-count 2 \
    --section SpeedOfLight --section Occupancy --section WarpStateStats --section LaunchStats --section MemoryWorkloadAnalysis \
    $D bench decode --model synthetic:llama3-8b --prompt 0 --tokens 2 --bits 3 --k-chunk 0 $HB > $OUT/h200-ncu-head-$hb-s13.txt 2>&1; echo "== ncu head $hb rc $?"
  grep -E "head_u8_gemv|dense_gemv|Duration|DRAM Throughput|Memory Throughput|Achieved Occupancy|Theoretical Occupancy|Registers Per|Block Limit|Stall|Warp Cycles Per Issued|Issue Slot|Compute \(SM\)|Mem Busy|Max Bandwidth" $OUT/h200-ncu-head-$hb-s13.txt | head -60
done
