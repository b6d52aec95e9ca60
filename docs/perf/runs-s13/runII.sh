#!/bin/bash
# run II (session 13): re-measure experiment 14's opt-in fusions on today's tree (DECDEC_FUSE=rope|norm|norm,rope)
D=.device/decdec
for f in none rope norm norm,rope none; do
  DECDEC_FUSE=$f timeout 150 $D bench decode --model synthetic:llama3-8b --bits 3 --k-chunk 0,4 --tokens 256 --prompt 0 --depth 0,1024 > $OUT/fuse-$f.txt 2>&1; echo "== DECDEC_FUSE=$f rc $?"
  grep -E "^k_chunk|rror" $OUT/fuse-$f.txt | cut -c1-100
done
cat $OUT/fuse-*.txt > $OUT/h200-exp59-fusions-s13.txt; rm $OUT/fuse-*.txt
