#!/bin/bash
# run LD (session 16, experiment 78 after the fix): the rotation is rounded without FMA contraction in
# rope_kv and in the fused attention (rope_rotate); gpu-test with the fused RoPE (default) and with the
# separate rope_kv launch must print the same token-by-token perplexities. Then the final tree's
# decode figures (3/4/16-bit, depth, quantized heads).
N=.device/decdec
timeout 250 $N gpu-test --model models/stories260K --text .device/data/tinystories-sample.txt --ctx 512 --chunks 8 > $OUT/h200-gpu-test-s16.txt 2>&1; echo "gpu-test rc $?"
grep -E "FAIL|checks|rror|panic" $OUT/h200-gpu-test-s16.txt | tail -8 | cut -c1-150
grep -E "^ppl" $OUT/h200-gpu-test-s16.txt | sed 's/  */ /g' | cut -c1-160
DECDEC_ROPE_LAUNCH=1 timeout 250 $N gpu-test --model models/stories260K --text .device/data/tinystories-sample.txt --ctx 512 --chunks 8 > $OUT/h200-gpu-test-rope-launch-s16.txt 2>&1; echo "gpu-test ROPE_LAUNCH rc $?"
grep -E "FAIL|checks|rror|panic" $OUT/h200-gpu-test-rope-launch-s16.txt | tail -4 | cut -c1-150
grep -E "^ppl" $OUT/h200-gpu-test-rope-launch-s16.txt | sed 's/  */ /g' | cut -c1-160
run() { # label bits k_chunks extra-args env...
  local l=$1 b=$2 kc=$3 x=$4; shift 4
  env "$@" timeout 150 $N bench decode --model synthetic:llama3-8b --bits $b --k-chunk $kc --tokens 256 --prompt 0 $x > $OUT/d.txt 2>&1; echo "== $l bits $b $x rc $?"
  cat $OUT/d.txt >> $OUT/h200-bench-decode-s16.txt
  grep -E "^k_chunk|rror" $OUT/d.txt | cut -c1-100
}
run "rope_kv launch" 3 0,4 "" DECDEC_ROPE_LAUNCH=1
run "fused" 3 0,4,8 ""
run "rope_kv launch" 3 0,4 "" DECDEC_ROPE_LAUNCH=1
run "fused" 3 0,4,8 ""
run "fused" 4 0,4,8 ""
run "fused" 16 0 ""
run "fused" 3 0 "--head-bits 8"
run "fused" 3 0 "--head-bits 4"
timeout 250 $N bench decode --model synthetic:llama3-8b --bits 3 --k-chunk 0 --tokens 256 --depth 0,1024,4096 > $OUT/h200-bench-decode-depth-s16.txt 2>&1; echo "== depth rc $?"; grep -E "^k_chunk|depth|rror" $OUT/h200-bench-decode-depth-s16.txt | cut -c1-100
rm -f $OUT/d.txt
