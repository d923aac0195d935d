#!/usr/bin/env bash
# The base form's products for 9–32 decode rows with x through a shared-memory ring (TenantLinearBaseRing.cs): the
# first form (--base-ring-form 1, the group count a parameter), the second (2: one kernel a group count, the loop
# unrolled by 3) and the register form (--no-base-ring): the tenant linear tests with CUDA as the device, the audit,
# the kernel table at 9–32 tenants of one row three ways, the 7B step at 16, 24, 32 tenants three ways, and Nsight
# Compute's stall samples and durations of BaseRing4Kernel (second form) and durations of BaseRingKernel at 4096².
# Usage (device tool, carry [".gpu"]): bash tools/gpu/base-ring.sh. Logs under $OUT.
set -uo pipefail
. tools/gpu/unpack.sh
BITDELTA_TEST_DEVICES=cuda timeout 150 $A/BitDeltaNative.Tests -class "BitDeltaNative.Tests.Kernels.TenantLinearBitsTests" \
  -class "BitDeltaNative.Tests.Kernels.TenantLinearPartsTests" -class "BitDeltaNative.Tests.Kernels.MatMulMmaTests" > $OUT/tests-cuda.log 2>&1
echo "tests exit $?"; grep -E "\[FAIL\]|Total" $OUT/tests-cuda.log | head -8
timeout 100 $A/bitdelta audit --device cuda --kernel "tenant linear" --cases 50 2>&1 | grep -E "tenant linear|all kernels"
for form in "--base-ring-form 2" "--base-ring-form 1" --no-base-ring; do
  echo "== kernel table $form"
  timeout 100 $A/bitdelta bench multitenant --device cuda --kernel-only --tenants 9,16,24,32 --requests 1 --iters 10 $form \
    --shapes 4096x4096,11008x4096,4096x11008,12288x4096,22016x4096 2>&1 | tee "$OUT/kernel${form// /}.txt" | grep -E "^[0-9]+×"
done
for form in "--base-ring-form 2" "--base-ring-form 1" --no-base-ring "--base-ring-form 2"; do
  echo "== 7B step $form"
  timeout 100 $A/bitdelta bench multitenant --device cuda --random-7b --tenants 16,24,32 --requests 1 --new-tokens 32 --no-kernel-table $form 2>&1 \
    | tee -a $OUT/step.txt | grep -E "^ +[0-9]+ +[0-9]+ "
done
BENCH_ARGS="--base-ring-form 2" bash tools/gpu/ncu-source.sh BaseRing4Kernel 4096x4096 32 9 16 24 32
python3 tools/gpu/sass-stalls.py $OUT/src-BaseRing4Kernel.csv 16
NCU=/usr/local/cuda/bin/ncu
for T in 9 16 24 32; do
  d=$(timeout 60 $NCU --clock-control none --kernel-name regex:"BaseRingKernel\$" --launch-skip 4 --launch-count 3 --section SpeedOfLight \
      $A/bitdelta bench multitenant --device cuda --kernel-only --tenants $T --requests 1 --shapes 4096x4096 --iters 3 --base-ring-form 1 2>&1 \
      | grep -E "^ +Duration" | awk '{print $NF}' | sort -n | head -1)
  echo "BaseRingKernel (first form) 4096² $T tenants: $d µs (least of 3)"
done
