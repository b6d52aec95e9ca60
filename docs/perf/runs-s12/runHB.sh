#!/bin/bash
# run HB (session 12): experiment 54, the register-stream GEMV (weights loaded straight into
# registers, no shared-memory ring): gpu-test, kernel bench with split sweep, decode A/B
D=.device/decdec
nvidia-smi --query-gpu=name,clocks.sm,clocks.mem --format=csv,noheader
timeout 300 $D gpu-test --model models/stories260K --text .device/data/tinystories-sample.txt --ctx 512 --chunks 8 > $OUT/h200-gpu-test-exp54b-s12.txt 2>&1; echo "gpu-test rc $?"
grep -E "FAIL|checks|rror|panic" $OUT/h200-gpu-test-exp54b-s12.txt | tail -8
timeout 240 $D bench kernels --shapes llama3-8b --bits 3,4 --k-chunk 0 --no-lut --no-coop > $OUT/kern_sweep.txt 2>&1; echo "== kern sweep rc $?"
grep -E "^uniform|^  uniform|rror" $OUT/kern_sweep.txt | grep -v "split-K\|stream schedule" | cut -c1-110
for s in tiles regs regs3; do
  echo "#### DECDEC_SCHED=$s" >> $OUT/kdec_all.txt
  DECDEC_SCHED=$s timeout 120 $D bench kernels --shapes llama3-8b --bits 3 --k-chunk 4,8 --no-lut --no-coop >> $OUT/kdec_all.txt 2>&1; echo "== kern dec sched=$s rc $?"
done
grep -E "^####|^  uniform 3-bit g128  |producer of x k_chunk|rror" $OUT/kdec_all.txt | cut -c1-120
dec() { echo "#### DECDEC_SCHED=$1 bits $2" >> $OUT/dec_all.txt; DECDEC_SCHED=$1 timeout 100 $D bench decode --model synthetic:llama3-8b --bits $2 --k-chunk $3 --tokens 256 >> $OUT/dec_all.txt 2>&1; echo "== decode sched=$1 bits $2 rc $?"; }
dec tiles 3 0,4; dec regs 3 0,4; dec regs3 3 0,4; dec tiles 4 0; dec regs 4 0; dec regs3 4 0
grep -E "^####|^k_chunk|rror" $OUT/dec_all.txt | cut -c1-100
