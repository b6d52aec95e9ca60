#!/bin/bash
# run IL (session 13): experiment 60b, fused RoPE attention writing k,v from every block (no pos special case): DECDEC_FUSE=none|rope; gpu-test
D=.device/decdec
for f in none rope none rope; do
  DECDEC_FUSE=$f timeout 150 $D bench decode --model synthetic:llama3-8b --bits 3 --k-chunk 0,4 --tokens 256 --prompt 0 --depth 0,256,1024 > $OUT/f.txt 2>&1; echo "== DECDEC_FUSE=$f rc $?"
  grep -E "^k_chunk|rror" $OUT/f.txt | cut -c1-80; cat $OUT/f.txt >> $OUT/h200-exp60b-rope-s13.txt
done
rm -f $OUT/f.txt
timeout 300 $D gpu-test --model models/stories260K --text .device/data/tinystories-sample.txt --ctx 512 --chunks 8 > $OUT/h200-gpu-test-exp60b-s13.txt 2>&1; echo "gpu-test rc $?"
grep -E "FAIL|checks|rror|panic|rope" $OUT/h200-gpu-test-exp60b-s13.txt | tail -8 | cut -c1-160
