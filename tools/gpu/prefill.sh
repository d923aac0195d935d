#!/usr/bin/env bash
# One GPU call for the tensor-core prefill (issue 9): the audit of the GEMM and BitDelta forms it serves, the model,
# distillation and engine tests with CUDA as the device, the demo end to end (its eval and distillation now run their
# many-row linears on tensor cores), then `bench gemm` with each form's error against the f64 twin, and the 7B decode step with its kernel launches.
# Usage (device tool, carry [".gpu"]): bash tools/gpu/prefill.sh. Logs under $OUT.
set -uo pipefail
A=/tmp/a
mkdir -p $A && tar -C $A -xJf .gpu/app.tar.xz
OUT=${OUT:-/tmp/out}; mkdir -p $OUT
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
echo "== audit"
timeout 90 $A/bitdelta audit --device cuda --kernel gemm --cases 200 2>&1 | grep -E "│ [a-z]" 
timeout 90 $A/bitdelta audit --device cuda --kernel bitlinear --cases 200 2>&1 | grep -E "│ [a-z]"
timeout 90 $A/bitdelta audit --device cuda --kernel "tenant linear" --cases 100 2>&1 | grep -E "│ [a-z]"
echo "== tests, CUDA as the device under test"
export BITDELTA_DEMO="$PWD/demo"
BITDELTA_TEST_DEVICES=cuda timeout 100 $A/BitDeltaNative.Tests -class "BitDeltaNative.Tests.Kernels.MatMulMmaTests" \
  -class "BitDeltaNative.Tests.Models.DistillationTests" -class "BitDeltaNative.Tests.Models.BitDeltaGoldenTests" \
  -class "BitDeltaNative.Tests.Models.ForwardGoldenTests" -class "BitDeltaNative.Tests.Models.DemoOracleTests" \
  -class "BitDeltaNative.Tests.Serving.EngineTests" > $OUT/tests-cuda.log 2>&1
echo "tests exit $?"; grep -E "\[FAIL\]|Total:" $OUT/tests-cuda.log | head -20
echo "== demo"
( time timeout 60 $A/bitdelta demo --device cuda --out /tmp/demo ) > $OUT/demo.txt 2>&1; tail -40 $OUT/demo.txt | grep -vE "^\s*$" | tail -28
echo "== bench gemm"
timeout 60 $A/bitdelta bench gemm --device cuda --rows 512,2048 2>&1 | tee $OUT/gemm.txt | tail -9
echo "== 7B decode step: launches per step"
timeout 100 $A/bitdelta bench multitenant --device cuda --random-7b --tenants 1,16 --requests 1 --new-tokens 32 2>&1 | tee $OUT/step.txt | sed -n '/tokens each/,$p'
