#!/usr/bin/env bash
# One GPU call for the multi-tenant kernel (issues 7 and 9): the kernel tests with CUDA as the device, the kernel table
# at 7B shapes (with the read ceilings), then the 7B decode step (random weights). Usage (device tool, carry [".gpu"]):
#   bash tools/gpu/multitenant.sh [kernel-table options…]
# Logs under $OUT: tests-cuda.log, bench.txt.
set -uo pipefail
A=/tmp/a
mkdir -p $A && tar -C $A -xJf .gpu/app.tar.xz
OUT=${OUT:-/tmp/out}; mkdir -p $OUT
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,clocks.max.mem --format=csv,noheader
echo "== tests, CUDA as the device under test"
BITDELTA_TEST_DEVICES=cuda timeout 100 $A/BitDeltaNative.Tests -class "BitDeltaNative.Tests.Kernels.BulkTests" \
  -class "BitDeltaNative.Tests.Kernels.TenantLinearStreamTests" -class "BitDeltaNative.Tests.Kernels.TenantLinearBitsTests" \
  > $OUT/tests-cuda.log 2>&1; echo "tests exit $?"; grep -E "\[FAIL\]|Total|Failed:|Passed" $OUT/tests-cuda.log | head -20
echo "== audit of the tenant linear forms; PTX of every kernel, the streamed and bulk ones through ptxas (registers, spills)"
timeout 120 $A/bitdelta audit --device cuda --kernel "tenant linear" --cases 50 --ptx /tmp/ptx 2>&1 | tail -12
for k in Bulk.ReadProbeKernel TenantLinear.StreamOneKernel TenantLinear.StreamKernel TenantLinear.BaseOneKernel; do
  [ -f /tmp/ptx/$k.ptx ] && ptxas -arch=sm_90 -v /tmp/ptx/$k.ptx -o /tmp/$k.cubin 2>&1 | grep -E "error|Used|spill" | sed "s/^/$k: /" | head -4
done
echo "== kernel table, then the 7B decode step"
timeout 440 $A/bitdelta bench multitenant --device cuda --random-7b --tenants 1,2,4,8,16,32 --requests 1 --new-tokens 32 "$@" 2>&1 | tee $OUT/bench.txt | grep -v "^  [a-z-]*:"
