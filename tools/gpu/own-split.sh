#!/usr/bin/env bash
# The base blocks' own split of x for at most 4 rows (TenantLinear.StreamOwnSplitMaxRows), against 8 as before
# (--own-split-max-rows 8): the streamed form's tests on CUDA, the kernel at 4096² and the 7B decode through the engine
# at 1–16 tenants of one request, alternating.
# Usage (device tool, carry [".gpu"]): bash tools/gpu/own-split.sh. Logs under $OUT.
set -uo pipefail
. tools/gpu/unpack.sh
(cd $A && BITDELTA_TEST_DEVICES=cuda timeout 200 ./BitDeltaNative.Tests -class "BitDeltaNative.Tests.Kernels.TenantLinearStreamTests" \
  -class "BitDeltaNative.Tests.Kernels.TenantLinearPartsTests" > $OUT/tests-cuda.log 2>&1)
echo "tests exit $?"; grep -aE "\[FAIL\]|Total:" $OUT/tests-cuda.log | head
for v in "" "--own-split-max-rows 8"; do
  echo "== kernel ${v:-default}"
  timeout 100 $A/bitdelta bench multitenant --device cuda --kernel-only --tenants 1,4,6,8 --requests 1 --shapes 4096x4096 $v 2>&1 | grep -E "^[0-9]+×"
done
for rep in 1 2; do
  for v in "" "--own-split-max-rows 8"; do
    timeout 150 $A/bitdelta bench multitenant --device cuda --random-7b --tenants 1,4,8,16 --requests 1 --new-tokens 32 --no-kernel-table $v 2>&1 \
      | grep -E "^ +[0-9]" | sed "s/^/[${v:-default}] /"
  done
done
