#!/usr/bin/env bash
# One GPU call for the tensor-core prefill attention (AttentionMma.cs, issue 9): the attention audit cases on CUDA, ptxas's
# registers for both kernels, the attention test classes with CUDA as the device, then prefill timings with both attention
# kernels and a profile per kernel: Llama-2-7B at 2048 tokens, Mistral-7B at 4096 (window 4096) and 8192 (the window bites).
# Usage (device tool, carry [".gpu"]): bash tools/gpu/attention.sh. Logs under $OUT.
set -uo pipefail
A=/tmp/a
mkdir -p $A && tar -C $A -xJf .gpu/app.tar.xz
OUT=${OUT:-/tmp/out}; mkdir -p $OUT
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader
echo "== audit (attention), PTX through ptxas"
timeout 150 $A/bitdelta audit --device cuda --kernel attention --cases 200 --ptx /tmp/ptx 2>&1 | grep -E "attention|all kernels|FAIL"
for k in PrefillMmaF16Kernel PrefillMmaBf16Kernel; do echo "$k:"; ptxas -arch=sm_90 -v /tmp/ptx/Attention.$k.ptx -o /tmp/g.cubin 2>&1 | grep -E "error|Used|spill" | grep -v "Emu"; done
echo "== attention tests, CUDA as the device"
BITDELTA_TEST_DEVICES=cuda timeout 150 $A/BitDeltaNative.Tests -class "BitDeltaNative.Tests.Kernels.AttentionMmaTests" -class "BitDeltaNative.Tests.Kernels.AttentionTests" > $OUT/tests-cuda.log 2>&1
echo "tests exit $?"; grep -E "\[FAIL\]|Total:" $OUT/tests-cuda.log | head -20
R="--record $OUT/figures.jsonl --batches 1 --new-tokens 8"
echo "== Llama-2-7B, 2048 tokens"
timeout 150 $A/bitdelta bench model --device cuda --random-7b --prefill 2048 --scalar-attention --half-prefill --profile-prefill $R 2>&1 | tee $OUT/llama-2048.txt
echo "== Mistral-7B, 4096 tokens"
timeout 150 $A/bitdelta bench model --device cuda --random-mistral-7b --prefill 4096 --scalar-attention --half-prefill --profile-prefill $R 2>&1 | tee $OUT/mistral-4096.txt
echo "== Mistral-7B, 8192 tokens, window 4096"
timeout 120 $A/bitdelta bench model --device cuda --random-mistral-7b --prefill 8192 --half-prefill --profile-prefill $R 2>&1 | tee $OUT/mistral-8192.txt
