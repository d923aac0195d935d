#!/usr/bin/env bash
# One GPU call for `bitdelta generate` at serve's precision (Cli.HalfOnGpu): a half KV cache and the prefill's linears on
# half x by default on CUDA, against --exact (f32 cache, f32 x: the scalar prefill attention and the FMA-pair GEMM), on a
# Llama-2-7B-shaped checkpoint of random weights with a ~2000-token prompt; before it, the tests this touches with CUDA
# as the device (and the small kernels' dependent launches against ILGPU's own, bit for bit), and the decode attention
# audit. The first run of each mode compiles its kernels.
# Usage (device tool, carry [".gpu"]): bash tools/gpu/generate-half.sh. Logs under $OUT.
set -uo pipefail
. tools/gpu/unpack.sh
(python3 tools/oracle/bench_hf_7b.py --make /tmp/llama7b > $OUT/make.txt 2>&1; cp .gpu/shared/llama2/tokenizer.model /tmp/llama7b/) &
maker=$!
(cd $A && BITDELTA_TEST_DEVICES=cuda timeout 240 ./BitDeltaNative.Tests -class "BitDeltaNative.Tests.Tensors.DependentLaunchTests" \
  -class "BitDeltaNative.Tests.Models.GemvNormRouteTests" -class "BitDeltaNative.Tests.Kernels.RowOpTests" -class "BitDeltaNative.Tests.Kernels.AttentionTests" > $OUT/tests-cuda.log 2>&1)
echo "tests exit $?"; grep -aE "\[FAIL\]|Total:" $OUT/tests-cuda.log | head
(cd $A && BITDELTA_TEST_DEVICES=cuda timeout 120 ./BitDeltaNative.Tests -method "*A_half_kv_cache*" -method "*Generate_streams_text*" > $OUT/tests-gen.log 2>&1)
echo "generate tests exit $?"; grep -aE "\[FAIL\]|Total:" $OUT/tests-gen.log | head
timeout 100 $A/bitdelta audit --device cuda --kernel "attention decode" --cases 300 2>&1 | tail -1
wait $maker; tail -1 $OUT/make.txt
P=$(python3 -c "print(' '.join(['The quick brown fox jumps over the lazy dog near the river bank.'] * 150))")
for rep in 1 2 3; do
  for mode in "" "--exact"; do
    timeout 150 $A/bitdelta generate --model /tmp/llama7b --device cuda --prompt "$P" --max-tokens 64 $mode 2>&1 >/dev/null \
      | grep -E "precision|tokens for" | sed "s/^/[${mode:-default}] /"
  done
done
echo "== bench model: decode after a 2048-token prefill (half cache, as serve)"
timeout 200 $A/bitdelta bench model --device cuda --random-7b --batches 1,16 --prefill 2048 --new-tokens 32 2>&1 | grep -E "^decode|^prefill" | head
