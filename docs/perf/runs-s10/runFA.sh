#!/bin/bash
# run FA (session 10): experiment 51 (dependent launch triggered after the GEMV prologue for one-wave
# grids), decode-step ablation; stages SmolLM2 part a (and the binary) in /tmp for run FB
D=.device/decdec
cp .gga/smol.part-a /tmp/smol.part-a && cp $D /tmp/decdec && echo "staged part a"
nvidia-smi --query-gpu=name,clocks.sm,clocks.mem --format=csv,noheader
for e in none wave all; do
  DECDEC_EARLY=$e timeout 150 $D bench kernels --shapes llama3-8b --bits 3,4 --k-chunk 0 --no-lut --no-coop > $OUT/kern_$e.txt 2>&1; echo "== kern early=$e rc $?"
  grep -E "^uniform [34]-bit g128  |^  uniform|rror" $OUT/kern_$e.txt | grep -v schedule
done
for e in none wave; do
  DECDEC_EARLY=$e timeout 150 $D bench kernels --shapes llama3-8b --bits 3 --k-chunk 4,8 --no-lut --no-coop > $OUT/kdec_$e.txt 2>&1; echo "== kern dec early=$e rc $?"
  grep -E "producer of x k_chunk|^  uniform 3-bit g128  |rror" $OUT/kdec_$e.txt
done
dec() { DECDEC_EARLY=$1 timeout 100 $D bench decode --model synthetic:llama3-8b --bits $2 --k-chunk $3 --tokens 256 > $OUT/dec_$1_$2.txt 2>&1; echo "== decode early=$1 bits $2 rc $?"; grep -E "^k_chunk|rror" $OUT/dec_$1_$2.txt | cut -c1-120; }
dec none 3 0,4; dec wave 3 0,4; dec all 3 0,4; dec none 3 0; dec wave 3 0; dec none 4 0,4; dec wave 4 0,4
DECDEC_ABLATE_SKIP=attn timeout 100 $D bench decode --model synthetic:llama3-8b --bits 3 --k-chunk 0 --tokens 256 2>&1 | grep -E "^k_chunk|rror" | sed 's/^/skip attn: /'
ls -la /tmp/smol.part-a /tmp/decdec
