#!/bin/bash
# run IO (session 13): the head options as kernels (bench kernels on the lm_head shape 4096x128256: f16 cuBLAS / dense, uniform 3/4-bit, 8-bit)
D=.device/decdec
timeout 300 $D bench kernels --shapes 4096x128256,llama3-8b --bits 3,4 --k-chunk 0 --no-lut --no-coop --json $OUT/h200-bench-kernels-head-s13.json > $OUT/h200-bench-kernels-head-s13.txt 2>&1; echo "rc $?"
grep -E "^device|bandwidth|GEMV|g128  |layer|^  " $OUT/h200-bench-kernels-head-s13.txt | cut -c1-120 | head -40
