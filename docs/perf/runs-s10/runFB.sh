#!/bin/bash
# run FB (session 10): SmolLM2-135M-Instruct (Q4_1 GGUF, 98 MB) assembled from two carries (part a
# staged by run FA); gpu-test with its GPU/CPU perplexity parity on WikiText-2
D=/tmp/decdec; [ -x .device/decdec ] && D=.device/decdec
mkdir -p /tmp/smol && cat /tmp/smol.part-a .ggb/smol.part-b > /tmp/smol/SmolLM2-135M-Instruct.Q4_1.gguf && cp .ggb/tokenizer.json /tmp/smol/ && ls -la /tmp/smol && sha256sum /tmp/smol/*.gguf
timeout 520 $D gpu-test --model /tmp/smol/SmolLM2-135M-Instruct.Q4_1.gguf --text .ggb/wiki.txt --ctx 512 --chunks 8 --out $OUT/h200-gpu-test-smollm2-s10.txt > $OUT/gpu-test-smol.log 2>&1; echo "gpu-test rc $?"
grep -E "^ppl|FAIL|checks|rror|panic" $OUT/gpu-test-smol.log | tail -30
