#!/bin/bash
# run HC (session 12): the final tree on an H100 (80 GB HBM3): gpu-test, kernel bench, decode
D=.device/decdec
nvidia-smi --query-gpu=name,memory.total,clocks.sm,clocks.max.sm,clocks.mem --format=csv,noheader
timeout 300 $D gpu-test --model models/stories260K --text .device/data/tinystories-sample.txt --ctx 512 --chunks 8 > $OUT/h100-gpu-test-s12.txt 2>&1; echo "gpu-test rc $?"
grep -E "FAIL|checks|rror|panic" $OUT/h100-gpu-test-s12.txt | tail -8
timeout 200 $D bench kernels --shapes llama3-8b --bits 3,4 --k-chunk 0,4,8 --no-lut --no-coop --json $OUT/h100-bench-kernels-s12.json > $OUT/h100-bench-kernels-s12.txt 2>&1; echo "== kernels rc $?"
grep -E "^device|bandwidth|^fp16|^uniform [34]-bit g128  |^  uniform [34]-bit g128  |^  uniform [34]-bit g128 \+ DEC, selection by the producer|^  fp16|rror" $OUT/h100-bench-kernels-s12.txt | cut -c1-110
for b in 3 4; do
  timeout 150 $D bench decode --model synthetic:llama3-8b --bits $b --k-chunk 0,4,8 --tokens 256 >> $OUT/h100-bench-decode-s12.txt 2>&1; echo "== decode bits $b rc $?"
done
timeout 150 $D bench decode --model synthetic:llama3-8b --bits 16 --k-chunk 0 --tokens 256 --depth 0,4096 >> $OUT/h100-bench-decode-s12.txt 2>&1; echo "== decode bits 16 rc $?"
timeout 150 $D bench decode --model synthetic:llama3-8b --bits 3 --k-chunk 0,4 --tokens 256 --depth 0,1024,4096 >> $OUT/h100-bench-decode-s12.txt 2>&1; echo "== decode depth rc $?"
grep -E "^device|^model|^k_chunk|depth|rror" $OUT/h100-bench-decode-s12.txt | cut -c1-110
