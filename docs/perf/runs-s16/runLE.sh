#!/bin/bash
# run LE (session 16, experiment 79): the split-KV decode attention (from 512 positions) copies its
# range's key and value rows into shared memory before its PDL wait and requests this step's row
# with the position; A/B against every row through L2 (DECDEC_ATTN_SROWS=0, the previous path) in the
# same binary.
N=.device/decdec
timeout 250 $N gpu-test --model models/stories260K --text .device/data/tinystories-sample.txt --ctx 512 --chunks 8 > $OUT/h200-gpu-test-exp79-s16.txt 2>&1; echo "gpu-test rc $?"
grep -E "FAIL|checks|rror|panic" $OUT/h200-gpu-test-exp79-s16.txt | tail -8 | cut -c1-150
grep -E "split attention nh=32 nkv=8 hd=128 len=3001" $OUT/h200-gpu-test-exp79-s16.txt | head -4 | cut -c1-150
for i in 1 2; do
  for v in l2 staged; do
    E=""; [ $v = l2 ] && E="DECDEC_ATTN_SROWS=0"
    env $E timeout 250 $N bench decode --model synthetic:llama3-8b --bits 3 --k-chunk 0 --tokens 256 --depth 768,1280,4096 > $OUT/d.txt 2>&1; echo "== $v rc $?"
    cat $OUT/d.txt >> $OUT/h200-bench-decode-depth-exp79-$v-s16.txt
    grep -E "depth|rror" $OUT/d.txt | cut -c1-100
  done
done
rm -f $OUT/d.txt
