#!/usr/bin/env bash
# One GPU call for the prefill GEMM (issue 9): its audit case and registers, the model goldens with CUDA as the device
# (their prefill runs through it), then `bench gemm` beside cuBLAS through PyTorch at the same shapes.
# Usage (device tool, carry [".gpu"]): bash tools/gpu/gemm.sh. Logs under $OUT.
set -uo pipefail
A=/tmp/a
mkdir -p $A && tar -C $A -xJf .gpu/app.tar.xz
OUT=${OUT:-/tmp/out}; mkdir -p $OUT
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader
echo "== audit (gemm forms), PTX through ptxas"
timeout 120 $A/bitdelta audit --device cuda --kernel gemm --cases 200 --ptx /tmp/ptx 2>&1 | tail -7
ptxas -arch=sm_90 -v /tmp/ptx/MatMul.GemmMmaKernel.ptx -o /tmp/g.cubin 2>&1 | grep -E "error|Used|spill"
echo "== model goldens, CUDA as the device under test"
export BITDELTA_DEMO="$PWD/demo"
BITDELTA_TEST_DEVICES=cuda timeout 150 $A/BitDeltaNative.Tests -class "BitDeltaNative.Tests.Models.ForwardGoldenTests" \
  -class "BitDeltaNative.Tests.Models.BitDeltaGoldenTests" -class "BitDeltaNative.Tests.Models.DemoOracleTests" > $OUT/tests-cuda.log 2>&1
echo "tests exit $?"; grep -E "\[FAIL\]|Total:" $OUT/tests-cuda.log | head -20
echo "== bench gemm, then cuBLAS"
timeout 150 $A/bitdelta bench gemm --device cuda --rows 512,2048 "$@" 2>&1 | tee $OUT/gemm.txt
timeout 120 python3 tools/oracle/bench_torch_gemm.py --rows 512,2048 2>&1 | tee $OUT/torch-gemm.txt
