#!/bin/bash
# run LH (session 16): the final tree (commit c40222e): gpu-test, decode figures (3/4/16-bit, with
# DEC, at depth, quantized heads), and one knob A/B (the attention's PDL trigger at its end).
N=.device/decdec
timeout 250 $N gpu-test --model models/stories260K --text .device/data/tinystories-sample.txt --ctx 512 --chunks 8 > $OUT/h200-gpu-test-final-s16.txt 2>&1; echo "gpu-test rc $?"
grep -E "FAIL|checks|rror|panic" $OUT/h200-gpu-test-final-s16.txt | tail -6 | cut -c1-150
run() { # label bits k_chunks extra env...
  local l=$1 b=$2 kc=$3 x=$4; shift 4
  env "$@" timeout 200 $N bench decode --model synthetic:llama3-8b --bits $b --k-chunk $kc --tokens 256 --prompt 0 $x > $OUT/d.txt 2>&1; echo "== $l bits $b $x rc $?"
  cat $OUT/d.txt >> $OUT/h200-bench-decode-final-s16.txt
  grep -E "^k_chunk|rror" $OUT/d.txt | cut -c1-100
}
run final 3 0,4,8 ""
run final 4 0,4,8 ""
run final 16 0 ""
run final 3 0 "--head-bits 8"
run final 3 0 "--head-bits 4"
run final 3 0 "--depth 0,256,1024,4096"
run "late trigger" 3 0,4 "" DECDEC_DEFINES=ATTN_LATE_TRIGGER=1
run final 3 0,4 ""
rm -f $OUT/d.txt
