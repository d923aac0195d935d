#!/usr/bin/env bash
# One GPU call for GemvNorm (one row's RMSNorm fused into q/k/v, gate/up + SwiGLU and the head, GemvNorm.cs): its audit on
# CUDA and ptxas's register count, the route's tests with CUDA as the device, then the 7B decode step of the plain model,
# of one delta and of the engine at one tenant, each with and without it, and where one step's time goes kernel by kernel.
# Usage (device tool, carry [".gpu"]): bash tools/gpu/gemv-norm.sh. Logs under $OUT.
set -uo pipefail
A=/tmp/a
mkdir -p $A && tar -C $A -xJf .gpu/app.tar.xz
cp -r tests/fixtures $A/fixtures 2>/dev/null
OUT=${OUT:-/tmp/out}; mkdir -p $OUT
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
echo "== audit (CUDA), ptxas"
timeout 90 $A/bitdelta audit --device cuda --kernel "gemv norm" --cases 300 --ptx /tmp/ptx --seed 7 2>&1 | tail -3
timeout 60 $A/bitdelta audit --device cuda --kernel "gemv one" --cases 100 2>&1 | tail -3
for k in Kernel TenantKernel; do ptxas -arch=sm_90 -v /tmp/ptx/GemvNorm.$k.ptx -o /tmp/g.cubin 2>&1 | grep -E "error|Used|spill" | sed "s/^/$k: /" | head -4; done
echo "== tests with CUDA as the device"
(cd $A && BITDELTA_TEST_DEVICES=cuda timeout 200 ./BitDeltaNative.Tests -class "BitDeltaNative.Tests.Models.GemvNormRouteTests" \
  -class "BitDeltaNative.Tests.Kernels.GemvOneTests" -class "BitDeltaNative.Tests.Models.ForwardGoldenTests" > $OUT/tests-cuda.log 2>&1)
echo "tests exit $?"; grep -E "\[FAIL\]|Total:" $OUT/tests-cuda.log | head
echo "== bench model, 7B, one row: plain and one delta; GemvNorm for base rows (default), off, and for tenants' rows too"
for f in "" "--no-gemv-norm" "--gemv-norm-tenants"; do
  timeout 120 $A/bitdelta bench model --device cuda --random-7b --batches 1 --prefill 64 --random-delta $f 2>&1 | grep -E "decode" | grep -v "apart" | sed "s/^/[${f:-default}] /"
done
echo "== step profile, 1 tenant: default and off"
for f in "" "--no-gemv-norm"; do
  timeout 150 $A/bitdelta bench multitenant --device cuda --random-7b --tenants 1 --no-kernel-table --step-profile --prompt-tokens 64 $f \
    2>&1 | tee $OUT/profile${f}.txt | grep -E "launches|Kernel  " | sed "s/^/[${f:-default}] /"
done
echo "== decode, 1 tenant: default, off, tenants' rows too"
for f in "" "--no-gemv-norm" "--gemv-norm-tenants"; do
  timeout 120 $A/bitdelta bench multitenant --device cuda --random-7b --tenants 1 --requests 1 --new-tokens 32 --no-kernel-table $f 2>&1 | grep -E "^ +[0-9]" | sed "s/^/[${f:-default}] /"
done
