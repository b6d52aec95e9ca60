#!/bin/bash
# run GJ (session 11): after folding the o-selection hand-off into one device helper: gpu-test;
# experiment 53f, where to switch to the split-KV attention (DECDEC_ATTN = 512 / 384 / 256 / 128)
D=.device/decdec
timeout 300 $D gpu-test --model models/stories260K --text .device/data/tinystories-sample.txt --ctx 512 --chunks 8 > $OUT/h200-gpu-test-final2-s11.txt 2>&1; echo "gpu-test rc $?"
grep -E "^ppl|FAIL|checks|rror|panic" $OUT/h200-gpu-test-final2-s11.txt | tail -10
for sw in 512 384 256 128; do
  DECDEC_ATTN=$sw timeout 150 $D bench decode --model synthetic:llama3-8b --prompt 0 --tokens 256 --bits 3 --k-chunk 0 --depth 0,256 > $OUT/dec_sw$sw.txt 2>&1; echo "== switch $sw rc $?"; grep -E "^k_chunk|rror" $OUT/dec_sw$sw.txt | cut -c1-70
done
DECDEC_ATTN=512 timeout 150 $D bench decode --model synthetic:llama3-8b --prompt 0 --tokens 256 --bits 3 --k-chunk 0 --depth 0,256 > $OUT/dec_sw512b.txt 2>&1; echo "== switch 512 again rc $?"; grep -E "^k_chunk|rror" $OUT/dec_sw512b.txt | cut -c1-70
