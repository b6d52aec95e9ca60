#!/bin/bash
# run LB (session 16, experiment 78): RoPE and the KV append inside the one-block decode attention
# by default (the block keeps this step's rotated key row and value row for itself), against the
# separate rope_kv launch (DECDEC_ROPE_LAUNCH=1) in the same binary.
N=.device/decdec
timeout 300 $N gpu-test --model models/stories260K --text .device/data/tinystories-sample.txt --ctx 512 --chunks 8 > $OUT/h200-gpu-test-exp78-s16.txt 2>&1; echo "gpu-test rc $?"
grep -E "FAIL|checks|rror|panic" $OUT/h200-gpu-test-exp78-s16.txt | tail -12 | cut -c1-150
run() { # label bits k_chunks env...
  local l=$1 b=$2 kc=$3; shift 3
  env "$@" timeout 150 $N bench decode --model synthetic:llama3-8b --bits $b --k-chunk $kc --tokens 256 --prompt 0 > $OUT/d.txt 2>&1; echo "== $l bits $b rc $?"
  cat $OUT/d.txt >> $OUT/h200-bench-decode-exp78-s16.txt
  grep -E "^k_chunk|rror" $OUT/d.txt | cut -c1-100
}
for i in 1 2; do
  run "rope_kv launch" 3 0,4 DECDEC_ROPE_LAUNCH=1
  run "fused (new default)" 3 0,4
done
run "rope_kv launch" 4 0,4 DECDEC_ROPE_LAUNCH=1
run "fused" 4 0,4
run "rope_kv launch" 16 0 DECDEC_ROPE_LAUNCH=1
run "fused" 16 0
run "fused skip attn" 3 0 DECDEC_ABLATE_SKIP=attn
timeout 250 $N bench decode --model synthetic:llama3-8b --bits 3 --k-chunk 0 --tokens 256 --depth 256,1024,4096 > $OUT/h200-bench-decode-depth-s16.txt 2>&1; echo "== depth rc $?"; grep -E "^k_chunk|depth|rror" $OUT/h200-bench-decode-depth-s16.txt | cut -c1-100
rm -f $OUT/d.txt
