#!/usr/bin/env bash
# One GPU call for the half-operand GEMMs (GemmHalf.cs, GemmWgmma.cs; issue 9): their audit cases and the product's, tests with CUDA
# as the device, ptxas's registers for both kernels, then `bench gemm` beside cuBLAS through PyTorch at the same shapes.
# Usage (device tool, carry [".gpu"]): bash tools/gpu/gemm-half.sh [bench gemm options]. Logs under $OUT.
set -uo pipefail
A=/tmp/a
mkdir -p $A && tar -C $A -xJf .gpu/app.tar.xz
OUT=${OUT:-/tmp/out}; mkdir -p $OUT
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader
echo "== audit (gemm forms, mma f16/bf16), PTX through ptxas"
timeout 120 $A/bitdelta audit --device cuda --kernel gemm --cases 200 --ptx /tmp/ptx 2>&1 | grep -E "gemm|all kernels|FAIL"
timeout 60 $A/bitdelta audit --device cuda --kernel "mma m16n8k16 f16/bf16" --cases 200 2>&1 | grep -E "mma|all kernels|FAIL"
timeout 60 $A/bitdelta audit --device cuda --kernel "wgmma" --cases 50 2>&1 | grep -E "wgmma|all kernels|FAIL|rror"
ptxas -arch=sm_90a -v /tmp/ptx/Wgmma.ProbeKernel.ptx -o /tmp/w.cubin 2>&1 | grep -E "error|Used|spill"; cuobjdump -sass /tmp/w.cubin 2>/dev/null | grep -E "HGMMA|WARPGROUP" | head -4
for k in F16Kernel F16WideKernel F16AsyncKernel F16AsyncWideKernel Bf16AsyncWideKernel; do echo "$k:"; ptxas -arch=sm_90 -v /tmp/ptx/GemmHalf.$k.ptx -o /tmp/g.cubin 2>&1 | grep -E "error|Used|spill"; done
# the warpgroup GEMM: registers, and any warning (C7510: ptxas serializing the wgmma products), then its SASS products
for k in F16CoreKernel F16Kernel Bf16Kernel; do echo "GemmWgmma.$k:"; ptxas -arch=sm_90a -v /tmp/ptx/GemmWgmma.$k.ptx -o /tmp/gw.cubin 2>&1 | grep -iE "error|warn|Used|spill"; done
cuobjdump -sass /tmp/gw.cubin 2>/dev/null | grep -cE "HGMMA" | sed 's/^/HGMMA in the bf16 SASS: /'
cuobjdump -sass /tmp/gw.cubin 2>/dev/null | grep -E "HGMMA|WARPGROUP" | head -6
echo "== GemmHalfTests, CUDA as the device"
# one process a class: a fault in one (a kernel's illegal address ends the CUDA context) leaves the others their own
[ -d $A/fixtures ] || cp -r tests/fixtures $A/fixtures   # a --lean pack leaves them out
for c in Kernels.WgmmaTests Kernels.GemmWgmmaTests Kernels.GemmHalfTests Models.HalfPrefillTests; do
  [ -x $A/BitDeltaNative.Tests ] && BITDELTA_TEST_DEVICES=cuda timeout 120 $A/BitDeltaNative.Tests -class "BitDeltaNative.Tests.$c" >> $OUT/tests-cuda.log 2>&1
done
grep -E "\[FAIL\]|Total:" $OUT/tests-cuda.log | head -20
echo "== bench gemm, then cuBLAS"
timeout 200 $A/bitdelta bench gemm --device cuda --rows 512,2048 "$@" 2>&1 | tee $OUT/gemm.txt
timeout 120 python3 tools/oracle/bench_torch_gemm.py --rows 512,2048 2>&1 | tee $OUT/torch-gemm.txt
