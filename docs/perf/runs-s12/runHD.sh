#!/bin/bash
# run HD (session 12): per-kernel durations of the decode step (ncu, every graph node, serialized:
# no PDL overlap), 3-bit synthetic llama3-8b, k_chunk 0 and 4, 16-bit; a short decode for scale
D=.device/decdec
NCU=$(which ncu || ls /usr/local/cuda*/bin/ncu 2>/dev/null | head -1)
for cfg in "3 0" "3 4" "16 0"; do
  set -- $cfg
  timeout 280 $NCU --graph-profiling node --clock-control none --csv --page raw --metrics gpu__time_duration.sum \
    $D bench decode --model synthetic:llama3-8b --prompt 0 --tokens 2 --bits $1 --k-chunk $2 > $OUT/ncu_step_b$1_k$2.csv 2> $OUT/ncu_step_b$1_k$2.err; echo "== ncu bits $1 k $2 rc $?"
  wc -l $OUT/ncu_step_b$1_k$2.csv
done
timeout 100 $D bench decode --model synthetic:llama3-8b --bits 3 --k-chunk 0,4 --tokens 256 2>&1 | grep -E "^k_chunk|rror" | cut -c1-100
