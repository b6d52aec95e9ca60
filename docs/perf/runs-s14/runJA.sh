#!/bin/bash
# Experiment 63: wgmma (register A) vs mma.sync rate microbenchmark on the H200.
set -x
cd docs/perf
nvcc -O3 -std=c++17 -gencode=arch=compute_90a,code=sm_90a -Xptxas -v -o /tmp/exp63 exp63-wgmma-rate.cu 2>&1 | grep -v '^$'
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm --format=csv
/tmp/exp63 | tee $OUT/exp63-run.txt
cuobjdump --dump-sass /tmp/exp63 > $OUT/exp63.sass 2>&1; grep -c WGMMA $OUT/exp63.sass; grep -c HMMA $OUT/exp63.sass
