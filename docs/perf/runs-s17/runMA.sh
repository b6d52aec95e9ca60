#!/bin/bash
# run MA (prepared in session 17, when no GPU was lent): experiment 81, the split-KV decode
# attention on the tensor cores: gpu-test (kernel checks incl. the 12 tensor-core cases), then
# decode at depth, the default tiers (CUDA-core split kernel from 512) vs DECDEC_ATTN_KERNEL=tc,
# same binary, alternating; the tensor-core kernel from 256 and from 0; split counts.
N=.device/decdec
timeout 250 $N gpu-test --model models/stories260K --text .device/data/tinystories-sample.txt --ctx 512 --chunks 8 > $OUT/h200-gpu-test-exp81-s17.txt 2>&1; echo "gpu-test rc $?"
grep -E "FAIL|checks|rror|panic" $OUT/h200-gpu-test-exp81-s17.txt | tail -8 | cut -c1-160
grep -E "tensor cores" $OUT/h200-gpu-test-exp81-s17.txt | head -60 | cut -c1-150
# the attention kernels alone (graph replays, caches rotated beyond L2), f16 and bf16
timeout 200 $N bench attention --shape llama3-8b --lengths 256,512,1024,2048,4096,8192 --json $OUT/h200-bench-attention-exp81-s17.json > $OUT/h200-bench-attention-exp81-s17.txt 2>&1; echo "bench attention rc $?"
cat $OUT/h200-bench-attention-exp81-s17.txt | sed -E "s/ +/ /g"
timeout 100 $N bench attention --shape 9,3,64 --lengths 1024,4096 --dtype bf16 2>&1 | sed -E "s/ +/ /g"
run() { # label bits k_chunks extra env...
  local l=$1 b=$2 kc=$3 x=$4; shift 4
  env "$@" timeout 200 $N bench decode --model synthetic:llama3-8b --bits $b --k-chunk $kc --tokens 256 --prompt 0 $x > $OUT/d.txt 2>&1; echo "== $l bits $b $x rc $?"
  echo "== $l bits $b $x $*" >> $OUT/h200-bench-decode-exp81-s17.txt
  cat $OUT/d.txt >> $OUT/h200-bench-decode-exp81-s17.txt
  grep -E "^k_chunk|rror" $OUT/d.txt | sed -E "s/ +/ /g" | cut -c1-220
}
D="--depth 0,256,512,1024,2048,4096"
T=DECDEC_ATTN_KERNEL=tc
run tc 3 0 "$D" $T
run default 3 0 "$D"
run "tc from 256" 3 0 "--depth 0,256" $T DECDEC_ATTN=256
run "tc from 0" 3 0 "--depth 0,256" $T DECDEC_ATTN=split
run "tc splits 32" 3 0 "--depth 1024,4096" $T DECDEC_ATTN_SPLITS=32
run "tc splits 8" 3 0 "--depth 1024,4096" $T DECDEC_ATTN_SPLITS=8
run "tc rope launch" 3 0 "--depth 1024,4096" $T DECDEC_ROPE_LAUNCH=1
run tc 3 4 "--depth 1024,4096" $T
run default 3 4 "--depth 1024,4096"
run tc 3 0 "$D" $T
run "16-bit tc" 16 0 "--depth 0,4096" $T
run "16-bit default" 16 0 "--depth 0,4096"
rm -f $OUT/d.txt
