#!/bin/bash
# run LA (session 16, experiment 76): the one-block decode attention stages value rows in shared
# memory before its PDL wait and asks for this step's key/value row with the position and q
# (one L2 round trip after the wait); against the previous tree's binary, same machine. Also the
# first open item: DECDEC_FUSE=norm (RMSNorm inside the uncompensated GEMVs) re-measured.
N=.device/decdec; B=.device/decdec-base
timeout 300 $N gpu-test --model models/stories260K --text .device/data/tinystories-sample.txt --ctx 512 --chunks 8 > $OUT/h200-gpu-test-exp76-s16.txt 2>&1; echo "gpu-test rc $?"
grep -E "FAIL|checks|rror|panic" $OUT/h200-gpu-test-exp76-s16.txt | tail -12 | cut -c1-150
run() { # label binary env...
  local l=$1 x=$2; shift 2
  env "$@" timeout 150 $x bench decode --model synthetic:llama3-8b --bits 3 --k-chunk $KC --tokens 256 --prompt 0 > $OUT/d.txt 2>&1; echo "== $l rc $?"
  cat $OUT/d.txt >> $OUT/h200-bench-decode-exp76-s16.txt
  grep -E "^k_chunk|rror" $OUT/d.txt | cut -c1-100
}
KC=0,4
for v in base new base new; do X=$N; [ $v = base ] && X=$B; run "$v k0,4" $X; done
KC=0
run "new VROWS=0" $N DECDEC_ATTN_VROWS=0
run "new FUSE=norm" $N DECDEC_FUSE=norm
run "new default" $N
run "new FUSE=norm" $N DECDEC_FUSE=norm
run "base FUSE=norm" $B DECDEC_FUSE=norm
run "new skip attn" $N DECDEC_ABLATE_SKIP=attn
run "base skip attn" $B DECDEC_ABLATE_SKIP=attn
timeout 200 $N bench decode --model synthetic:llama3-8b --bits 3 --k-chunk 0 --tokens 256 --depth 256 > $OUT/d.txt 2>&1; echo "== new depth 256 rc $?"; grep -E "^k_chunk|depth|rror" $OUT/d.txt | cut -c1-100
timeout 200 $B bench decode --model synthetic:llama3-8b --bits 3 --k-chunk 0 --tokens 256 --depth 256 > $OUT/d.txt 2>&1; echo "== base depth 256 rc $?"; grep -E "^k_chunk|depth|rror" $OUT/d.txt | cut -c1-100
rm -f $OUT/d.txt
