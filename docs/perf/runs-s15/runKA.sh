#!/bin/bash
# run KA (session 15, experiment 68): selection by min rounds. gpu-test of the new binary, then
# decode A/B (new vs the previous tree's binary, alternating, same machine) and the kernel bench's
# selection rows (in-GEMV selection stamps, selection in a separate launch).
N=.device/decdec; B=.device/decdec-base
timeout 300 $N gpu-test --model models/stories260K --text .device/data/tinystories-sample.txt --ctx 512 --chunks 8 > $OUT/h200-gpu-test-exp68-s15.txt 2>&1; echo "gpu-test rc $?"
grep -E "FAIL|checks|rror|panic|^PASS selection" $OUT/h200-gpu-test-exp68-s15.txt | tail -30 | cut -c1-150
for v in base new base new; do
  X=$N; [ $v = base ] && X=$B
  for bits in 3 4; do
    timeout 150 $X bench decode --model synthetic:llama3-8b --bits $bits --k-chunk 0,4,8 --tokens 256 --prompt 0 > $OUT/d.txt 2>&1; echo "== $v bits $bits rc $?"
    cat $OUT/d.txt >> $OUT/h200-bench-decode-exp68-$v-s15.txt
    grep -E "^k_chunk|rror" $OUT/d.txt | cut -c1-100
  done
done
for v in base new; do
  X=$N; [ $v = base ] && X=$B
  timeout 150 $X bench kernels --shapes llama3-8b --bits 3 --k-chunk 4,8,16 --n-dec 32 --no-lut --no-coop > $OUT/h200-bench-kernels-exp68-$v-s15.txt 2>&1; echo "== kernels $v rc $?"
  grep -E "select of|separate launch|fused  " $OUT/h200-bench-kernels-exp68-$v-s15.txt | grep -E "qkv|down" | cut -c1-120
done
rm -f $OUT/d.txt
