#!/usr/bin/env bash
# The bit-serial products with their signs three chunks ahead (--bits-ahead 3: BitsEndDeepKernel, the planes one chunk
# ahead, 168 registers, 3 blocks a multiprocessor; TenantLinearBits.cs SumDeep) against two (BitsEndKernel, 4 blocks):
# the bits tests with CUDA as the device (the split test compares both with the seven launches), the kernel table at
# 12–32 tenants of one row both ways, both kernels' durations at 4096² by Nsight Compute, and the 7B step at 16, 24
# and 32 tenants (3, 2, 3 chunks ahead). Prediction and result in bench/NOTES.md.
# Usage (device tool, carry [".gpu"]): bash tools/gpu/bits-ahead.sh. Logs under $OUT.
set -uo pipefail
. tools/gpu/unpack.sh
BITDELTA_TEST_DEVICES=cuda timeout 150 $A/BitDeltaNative.Tests -class "BitDeltaNative.Tests.Kernels.TenantLinearBitsTests" > $OUT/tests-cuda.log 2>&1
echo "tests exit $?"; grep -E "\[FAIL\]|Total" $OUT/tests-cuda.log | head -8
for a in 3 2; do
  echo "== kernel table, signs $a chunks ahead"
  timeout 100 $A/bitdelta bench multitenant --device cuda --kernel-only --tenants 12,16,20,24,28,32 --requests 1 --iters 10 --bits-ahead $a \
    --shapes 4096x4096,11008x4096,4096x11008,12288x4096,22016x4096 2>&1 | tee $OUT/kernel-ahead$a.txt | grep -E "^[0-9]+×"
done
NCU=/usr/local/cuda/bin/ncu
for k in BitsEndDeepKernel:3 BitsEndKernel:2; do for T in 16 24 32; do
  d=$(timeout 60 $NCU --clock-control none --kernel-name regex:"${k%:*}\$" --launch-skip 4 --launch-count 3 --section SpeedOfLight \
      $A/bitdelta bench multitenant --device cuda --kernel-only --tenants $T --requests 1 --shapes 4096x4096 --iters 3 --bits-ahead ${k#*:} 2>&1 \
      | grep -E "^ +Duration" | awk '{print $NF}' | sort -n | head -1)
  echo "${k%:*} 4096², $T tenants: $d µs (least of 3)"
done; done
for a in 3 2 3; do
  echo "== 7B step, signs $a chunks ahead"
  timeout 100 $A/bitdelta bench multitenant --device cuda --random-7b --tenants 16,24,32 --requests 1 --new-tokens 32 --no-kernel-table --bits-ahead $a 2>&1 \
    | grep -E "^ +[0-9]+ +[0-9]+ "
done
