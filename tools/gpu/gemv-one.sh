#!/usr/bin/env bash
# One GPU call for GemvOne (decode linears of 1 and 2 rows, GemvOne.cs): its audit on CUDA and ptxas's register counts, the
# forms at 7B shapes for 1–4 rows (bench gemv), the 7B decode step of the plain model and of one delta, and the
# multi-tenant decode at 1 and 2 tenants, each with and without it. Usage (device tool, carry [".gpu"]):
#   bash tools/gpu/gemv-one.sh
set -uo pipefail
A=/tmp/a
mkdir -p $A && tar -C $A -xJf .gpu/app.tar.xz
OUT=${OUT:-/tmp/out}; mkdir -p $OUT
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
echo "== audit (CUDA), ptxas"
timeout 90 $A/bitdelta audit --device cuda --kernel "gemv one" --cases 300 --ptx /tmp/ptx 2>&1 | tail -4
timeout 90 $A/bitdelta audit --device cuda --kernel "tenant linear" --cases 50 2>&1 | tail -6
for k in GemvOneKernel GemvFewKernel; do
  ptxas -arch=sm_90 -v /tmp/ptx/GemvOne.$k.ptx -o /tmp/g.cubin 2>&1 | grep -E "error|Used|spill" | sed "s/^/$k: /" | head -4
done
echo "== bench gemv, 1 and 2 rows"
for r in 1 2; do
  timeout 60 $A/bitdelta bench gemv --device cuda --rows $r --iters 50 --shapes 4096x4096,11008x4096,4096x11008 2>&1 | tee -a $OUT/gemv.txt | grep -v "^  [a-z-]*:  *[0-9.]*  *fraction" | tail -16
done
echo "== bench model, 7B, 1–3 rows (plain; one delta at 1 row), with and without GemvOne"
for f in "" "--no-gemv-one"; do
  timeout 150 $A/bitdelta bench model --device cuda --random-7b --batches 1,2,3 --prefill 64 $f 2>&1 | grep -E "decode" | sed "s/^/[${f:-gemv-one}] /"
done
echo "== bench multitenant decode, 1 and 2 tenants, with and without"
for f in "" "--no-gemv-one"; do
  timeout 150 $A/bitdelta bench multitenant --device cuda --random-7b --tenants 1,2 --requests 1 --new-tokens 32 --no-kernel-table $f 2>&1 | grep -E "^ +[0-9]" | sed "s/^/[${f:-gemv-one}] /"
done
