#!/usr/bin/env bash
# One GPU call for dependent launches (DependentLaunch.cs: the one-row linears GemvOne and GemvNorm launched through
# cuLaunchKernelEx so that they overlap the kernel ahead, griddepcontrol in the kernels): the bit-for-bit test against
# ILGPU's own launches and the audits on CUDA, then the one-row GEMV table and the 7B decode steps with and without.
# Usage (device tool, carry [".gpu"]): bash tools/gpu/pdl.sh. Logs under $OUT.
set -uo pipefail
A=/tmp/a
mkdir -p $A && tar -C $A -xJf .gpu/app.tar.xz
cp -r tests/fixtures $A/fixtures 2>/dev/null
OUT=${OUT:-/tmp/out}; mkdir -p $OUT
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
echo "== tests with CUDA as the device"
(cd $A && BITDELTA_TEST_DEVICES=cuda timeout 240 ./BitDeltaNative.Tests -class "BitDeltaNative.Tests.Models.GemvNormRouteTests" \
  -class "BitDeltaNative.Tests.Kernels.GemvOneTests" -class "BitDeltaNative.Tests.Tensors.DependentLaunchTests" -class "BitDeltaNative.Tests.Models.ForwardGoldenTests" > $OUT/tests-cuda.log 2>&1)
echo "tests exit $?"; grep -aE "\[FAIL\]|Total:|Assert|changed" $OUT/tests-cuda.log | head
echo "== audits (CUDA)"
timeout 90 $A/bitdelta audit --device cuda --kernel "gemv norm" --cases 200 2>&1 | tail -1
timeout 90 $A/bitdelta audit --device cuda --kernel "gemv one" --cases 100 2>&1 | tail -1
timeout 90 $A/bitdelta audit --device cuda --kernel "rmsnorm" --cases 50 2>&1 | tail -1
timeout 90 $A/bitdelta audit --device cuda --kernel "attention decode" --cases 50 2>&1 | tail -1
timeout 90 $A/bitdelta audit --device cuda --kernel "rmsnorm picked" --cases 50 2>&1 | tail -1
timeout 120 $A/bitdelta audit --device cuda --kernel "tenant linear" --cases 60 2>&1 | tail -1
echo "== bench model, 7B, one row (plain, then one delta): dependent launches, then plain; twice"
for f in "" "--no-pdl" "" "--no-pdl" "--gemv-norm-tenants"; do
  timeout 120 $A/bitdelta bench model --device cuda --random-7b --batches 1 --prefill 64 --random-delta $f 2>&1 | grep -E "decode" | grep -v "apart" | sed "s/^/[${f:-pdl}] /"
done
echo "== engine, 1, 8 and 32 tenants of one request: dependent launches, then plain"
for f in "" "--no-pdl"; do
  timeout 200 $A/bitdelta bench multitenant --device cuda --random-7b --tenants 1,8,32 --requests 1 --new-tokens 32 --no-kernel-table $f 2>&1 | grep -E "^ +[0-9]" | sed "s/^/[${f:-pdl}] /"
done
echo "== the multi-tenant kernel alone, 7B shapes, 1, 8 and 32 tenants of a row: dependent launches, then plain"
for f in "" "--no-pdl"; do
  timeout 200 $A/bitdelta bench multitenant --device cuda --random-7b --kernel-only --tenants 1,8,32 $f 2>&1 | tee $OUT/kernel${f}.txt | grep -E "^[0-9]+×" | cut -c1-60 | sed "s/^/[${f:-pdl}] /"
done
