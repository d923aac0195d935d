#!/usr/bin/env bash
# The bit-serial products' split of K (TenantLinearBits.cs BitsLayout; bench/NOTES.md "K in halves for 17–31 tenants"):
# the split tests with CUDA as the device, then the kernel table at 12–32 tenants of one row with the layout's pick and
# with --bits-split 1, 2 and 4, BitsEndKernel's duration at 4096² by Nsight Compute for each split, and the 7B step at
# 20 and 24 tenants with the pick and with split 2.
# Usage (device tool, carry [".gpu"]): bash tools/gpu/bits-split.sh. Logs under $OUT.
set -uo pipefail
. tools/gpu/unpack.sh
BITDELTA_TEST_DEVICES=cuda timeout 150 $A/BitDeltaNative.Tests -class "BitDeltaNative.Tests.Kernels.TenantLinearBitsTests" > $OUT/tests-cuda.log 2>&1
echo "tests exit $?"; grep -E "\[FAIL\]|Total" $OUT/tests-cuda.log | head -8
for s in "" 1 2 4; do
  echo "== kernel table, split ${s:-as picked}"
  timeout 120 $A/bitdelta bench multitenant --device cuda --kernel-only --tenants 12,16,20,24,28,32 --requests 1 --iters 10 ${s:+--bits-split $s} \
    --shapes 4096x4096,11008x4096,4096x11008,12288x4096,22016x4096 2>&1 | tee $OUT/kernel-split${s:-0}.txt | grep -E "^[0-9]+×"
done
NCU=/usr/local/cuda/bin/ncu
for s in 1 2 4; do for T in 16 20 24 32; do
  d=$(timeout 100 $NCU --clock-control none --kernel-name regex:"BitsEndKernel\$" --launch-skip 4 --launch-count 3 --section SpeedOfLight \
      $A/bitdelta bench multitenant --device cuda --kernel-only --tenants $T --requests 1 --shapes 4096x4096 --iters 3 --bits-split $s 2>&1 \
      | grep -E "^ +Duration" | awk '{print $NF}' | sort -n | head -1)
  echo "BitsEndKernel 4096² split $s, $T tenants: $d µs (least of 3)"
done; done
for s in "" 2; do
  echo "== 7B step, split ${s:-as picked}"
  timeout 120 $A/bitdelta bench multitenant --device cuda --random-7b --tenants 20,24 --requests 1 --new-tokens 32 --no-kernel-table ${s:+--bits-split $s} 2>&1 \
    | grep -E "^ +[0-9]+ +[0-9]+ "
done
