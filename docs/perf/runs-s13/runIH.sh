#!/bin/bash
# run IH (session 13): 8-bit head kernel with the index math cut (group shift, per-lane x pointers): decode, ncu, gpu-test
D=.device/decdec
NCU=$(which ncu || ls /usr/local/cuda*/bin/ncu 2>/dev/null | head -1)
for hb in none 8; do
  HB=""; [ $hb != none ] && HB="--head-bits $hb"
  timeout 150 $D bench decode --model synthetic:llama3-8b --bits 3 --k-chunk 0 --tokens 256 --prompt 0 $HB >> $OUT/h200-bench-decode-head8f-s13.txt 2>&1; echo "== decode 3-bit head $hb rc $?"
done
for def in HEAD_U8_NO_PREFETCH=1 HEAD_U8_BATCH=2; do
DECDEC_DEFINES=$def timeout 150 $D bench decode --model synthetic:llama3-8b --bits 3 --k-chunk 0 --tokens 256 --prompt 0 --head-bits 8 >> $OUT/h200-bench-decode-head8f-s13.txt 2>&1; echo "== decode 3-bit head 8 $def rc $?"
done
grep -E "^device|^k_chunk|rror" $OUT/h200-bench-decode-head8f-s13.txt | cut -c1-120
timeout 200 $NCU --graph-profiling node --clock-control none -k regex:"head_u8_gemv" --launch-count 1 \
    --section SpeedOfLight --section Occupancy --section WarpStateStats --section ComputeWorkloadAnalysis \
    $D bench decode --model synthetic:llama3-8b --prompt 0 --tokens 2 --bits 3 --k-chunk 0 --head-bits 8 > $OUT/h200-ncu-head8f-s13.txt 2>&1; echo "== ncu rc $?"
grep -E "Duration|DRAM Throughput|L2 Cache Throughput|Compute \(SM\)|Achieved Occupancy|Registers Per|Warp Cycles Per Issued|Executed Ipc A|Issue Slots Busy|pipe" $OUT/h200-ncu-head8f-s13.txt | head -20
timeout 300 $D gpu-test --model models/stories260K --text .device/data/tinystories-sample.txt --ctx 512 --chunks 8 > $OUT/h200-gpu-test-head8f-s13.txt 2>&1; echo "gpu-test rc $?"
grep -E "FAIL|checks|rror|panic" $OUT/h200-gpu-test-head8f-s13.txt | tail -4 | cut -c1-160
