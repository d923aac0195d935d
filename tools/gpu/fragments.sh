#!/usr/bin/env bash
# The bit-serial products with the planes stored fragment by fragment and two load buffers (TenantLinearBits.cs): the
# tenant linear tests with CUDA as the device, the audit, the kernel table at 4–32 tenants of one row, the 7B step at
# 1, 8, 16, 32 tenants, and Nsight Compute's stall samples on the products at 4096², 32 tenants.
# Usage (device tool, carry [".gpu"]): bash tools/gpu/fragments.sh. Logs under $OUT.
set -uo pipefail
. tools/gpu/unpack.sh
BITDELTA_TEST_DEVICES=cuda timeout 150 $A/BitDeltaNative.Tests -class "BitDeltaNative.Tests.Kernels.TenantLinearBitsTests" \
  -class "BitDeltaNative.Tests.Kernels.TenantLinearBitsForwardTests" -class "BitDeltaNative.Tests.Kernels.TenantLinearPartsTests" \
  -class "BitDeltaNative.Tests.Kernels.TenantLinearStreamTests" > $OUT/tests-cuda.log 2>&1; echo "tests exit $?"
grep -E "\[FAIL\]|Total" $OUT/tests-cuda.log | head -8
timeout 100 $A/bitdelta audit --device cuda --kernel "tenant linear" --cases 50 2>&1 | grep -E "tenant linear|all kernels"
timeout 150 $A/bitdelta bench multitenant --device cuda --kernel-only --tenants 4,8,16,32 --requests 1 --iters 10 \
  --shapes 4096x4096,11008x4096,4096x11008,12288x4096,22016x4096 2>&1 | tee $OUT/kernel.txt | grep -E "^[0-9]+×"
timeout 150 $A/bitdelta bench multitenant --device cuda --random-7b --tenants 1,8,16,32 --requests 1 --new-tokens 32 --no-kernel-table 2>&1 \
  | tee $OUT/step.txt | grep -E "^ +[0-9]+ +[0-9]+ "
bash tools/gpu/ncu-source.sh BitsEndKernel 4096x4096 32 16 20 32
