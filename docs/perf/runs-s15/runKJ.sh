#!/bin/bash
# run KJ (session 15, experiment 75): the decode attention's RoPE inputs load with the position
# (frequency before the PDL wait); gpu-test, then decode A/B against the previous tree.
N=.device/decdec; B=.device/decdec-base
timeout 200 $N gpu-test --model models/stories260K --text .device/data/tinystories-sample.txt --ctx 512 --chunks 8 > $OUT/h200-gpu-test-exp75-s15.txt 2>&1; echo "gpu-test rc $?"
grep -E "FAIL|checks|rror|panic" $OUT/h200-gpu-test-exp75-s15.txt | tail -5 | cut -c1-150
for v in base new base new; do
  X=$N; [ $v = base ] && X=$B
  timeout 60 $X bench decode --model synthetic:llama3-8b --bits 3 --k-chunk 0 --tokens 256 --prompt 0 > $OUT/d.txt 2>&1; echo "== decode $v rc $?"
  cat $OUT/d.txt >> $OUT/h200-bench-decode-exp75-$v-s15.txt
  grep -E "^k_chunk|rror" $OUT/d.txt | cut -c1-100
done
rm -f $OUT/d.txt
