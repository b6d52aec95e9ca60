#!/bin/bash
# run KB (session 15, experiment 69): zero-copy gather by cp.async.bulk vs 16-byte loads.
cd docs/perf
nvcc -O3 -std=c++17 -gencode=arch=compute_90a,code=sm_90a -o /tmp/exp69 exp69-bulk-zero-copy.cu 2>&1 | grep -v '^$' | head -20
/tmp/exp69 | tee $OUT/h200-exp69-bulk-zero-copy-s15.txt
