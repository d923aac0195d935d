#!/usr/bin/env bash
# One GPU call for GemvOne (the one-row decode linear, GemvOne.cs): its audit on CUDA and ptxas's register count, the
# one-row forms at 7B shapes (bench gemv), the 7B decode step of the plain model and of one delta, and the multi-tenant
# decode at 1 and 8 tenants, each with and without it. Usage (device tool, carry [".gpu"]): bash tools/gpu/gemv-one.sh
set -uo pipefail
A=/tmp/a
mkdir -p $A && tar -C $A -xJf .gpu/app.tar.xz
OUT=${OUT:-/tmp/out}; mkdir -p $OUT
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
echo "== audit (CUDA), ptxas"
timeout 90 $A/bitdelta audit --device cuda --kernel "gemv one" --cases 300 --ptx /tmp/ptx 2>&1 | tail -4
timeout 90 $A/bitdelta audit --device cuda --kernel "tenant linear" --cases 50 2>&1 | tail -6
ptxas -arch=sm_90 -v /tmp/ptx/GemvOne.GemvOneKernel.ptx -o /tmp/g.cubin 2>&1 | grep -E "error|Used|spill" | head -4
echo "== bench gemv, one row"
timeout 120 $A/bitdelta bench gemv --device cuda --rows 1 --shapes 4096x4096,11008x4096,4096x11008,32000x4096 2>&1 | tee $OUT/gemv.txt | grep -v "^  [a-z-]*:  *[0-9.]*  *fraction"
echo "== bench model, 7B, 1 row (plain, one delta), with and without GemvOne"
for f in "" "--no-gemv-one"; do
  timeout 150 $A/bitdelta bench model --device cuda --random-7b --batches 1 --prefill 64 --random-delta $f 2>&1 | tail -8 | sed "s/^/[${f:-gemv-one}] /"
done
echo "== bench multitenant decode, 1 and 8 tenants, with and without"
for f in "" "--no-gemv-one"; do
  timeout 150 $A/bitdelta bench multitenant --device cuda --random-7b --tenants 1 --requests 1 --new-tokens 32 --no-kernel-table $f 2>&1 | tail -8 | sed "s/^/[${f:-gemv-one}] /"
done
