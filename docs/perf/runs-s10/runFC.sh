#!/bin/bash
# run FC (session 10): SmolLM2-135M-Instruct assembled again (part a staged by the previous call);
# the user path on the GPU: `decdec quantize` (awq 3-bit, as in the README) on the GPU machine's CPUs,
# then `decdec ppl` on the CPU and with --device cuda at k_chunk 0/8/32, a real-model decode bench,
# and the in-process RTN-3 parity of gpu-test over 32 chunks (is its DEC difference noise?)
D=/tmp/decdec; [ -x .device/decdec ] && D=.device/decdec
mkdir -p /tmp/smol && cat /tmp/smol.part-a .ggb/smol.part-b > /tmp/smol/SmolLM2-135M-Instruct.Q4_1.gguf && cp .ggb/tokenizer.json /tmp/smol/ && sha256sum /tmp/smol/*.gguf
M=/tmp/smol/SmolLM2-135M-Instruct.Q4_1.gguf
/usr/bin/time -f "quantize wall %e s" timeout 420 $D quantize --model $M --out /tmp/smol-awq3 --method awq --bits 3 --calib .ggb/tinyshakespeare.txt --quiet > $OUT/quantize.log 2>&1; echo "quantize rc $?"; tail -3 $OUT/quantize.log
for k in 0 8 32; do for dev in cpu cuda; do
  $D ppl --model /tmp/smol-awq3 --text .ggb/wiki.txt --ctx 512 --max-chunks 16 --k-chunk $k --device $dev 2>&1 | grep -E "^ppl|rror" | sed "s/^/k_chunk $k $dev: /"
done; done
$D bench decode --model /tmp/smol-awq3 --k-chunk 0,8,32 --tokens 256 2>&1 | grep -E "^k_chunk|rror|model"
timeout 400 $D gpu-test --model $M --text .ggb/wiki.txt --ctx 512 --chunks 32 --out $OUT/h200-gpu-test-smollm2-32chunks-s10.txt > $OUT/gpu-test-smol32.log 2>&1; echo "gpu-test rc $?"
grep -E "^ppl|FAIL|checks|rror|panic" $OUT/gpu-test-smol32.log | tail -14
