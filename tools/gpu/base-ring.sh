#!/usr/bin/env bash
# The base form's products for 9–32 decode rows with x through a shared-memory ring (TenantLinearBaseRing.cs) against
# the register form (--no-base-ring): the tenant linear tests with CUDA as the device, the audit, the kernel table at
# 9–32 tenants of one row both ways, the 7B step at 16, 24, 32 tenants both ways, and Nsight Compute's stall samples and
# durations of BaseRingKernel at 4096².
# Usage (device tool, carry [".gpu"]): bash tools/gpu/base-ring.sh. Logs under $OUT.
set -uo pipefail
. tools/gpu/unpack.sh
BITDELTA_TEST_DEVICES=cuda timeout 150 $A/BitDeltaNative.Tests -class "BitDeltaNative.Tests.Kernels.TenantLinearBitsTests" \
  -class "BitDeltaNative.Tests.Kernels.TenantLinearPartsTests" -class "BitDeltaNative.Tests.Kernels.MatMulMmaTests" > $OUT/tests-cuda.log 2>&1
echo "tests exit $?"; grep -E "\[FAIL\]|Total" $OUT/tests-cuda.log | head -8
timeout 100 $A/bitdelta audit --device cuda --kernel "tenant linear" --cases 50 2>&1 | grep -E "tenant linear|all kernels"
for ring in "" --no-base-ring; do
  echo "== kernel table ${ring:-ring}"
  timeout 120 $A/bitdelta bench multitenant --device cuda --kernel-only --tenants 9,16,24,32 --requests 1 --iters 10 $ring \
    --shapes 4096x4096,11008x4096,4096x11008,12288x4096,22016x4096 2>&1 | tee $OUT/kernel${ring}.txt | grep -E "^[0-9]+×"
done
for ring in "" --no-base-ring ""; do
  echo "== 7B step ${ring:-ring}"
  timeout 120 $A/bitdelta bench multitenant --device cuda --random-7b --tenants 16,24,32 --requests 1 --new-tokens 32 --no-kernel-table $ring 2>&1 \
    | tee -a $OUT/step.txt | grep -E "^ +[0-9]+ +[0-9]+ "
done
bash tools/gpu/ncu-source.sh BaseRingKernel 4096x4096 32 9 16 24 32
python3 tools/gpu/sass-stalls.py $OUT/src-BaseRingKernel.csv 16
