#!/usr/bin/env bash
# After the streamed form's limit went to 8 rows (past it: the three launches, q/k/v in one for tenants and for the base
# alone): the tenant linear's tests on CUDA, then the 7B decode at 1–32 tenants of one request against the old limit
# (--stream-max-rows 16), alternating.
# Usage (device tool, carry [".gpu"]): bash tools/gpu/stream-rows2.sh. Logs under $OUT.
set -uo pipefail
. tools/gpu/unpack.sh
export BITDELTA_DEMO="$PWD/demo"
(cd $A && BITDELTA_TEST_DEVICES=cuda timeout 300 ./BitDeltaNative.Tests -class "BitDeltaNative.Tests.Kernels.TenantLinearPartsTests" \
  -class "BitDeltaNative.Tests.Models.TenantPartsTests" -class "BitDeltaNative.Tests.Kernels.TenantLinearStreamTests" \
  -class "BitDeltaNative.Tests.Kernels.TenantLinearBitsTests" -class "BitDeltaNative.Tests.Models.GemvNormRouteTests" \
  -class "BitDeltaNative.Tests.Serving.EngineTests" -class "BitDeltaNative.Tests.Serving.ServerTests" > $OUT/tests-cuda.log 2>&1)
echo "tests exit $?"; grep -aE "\[FAIL\]|Total:" $OUT/tests-cuda.log | head
timeout 120 $A/bitdelta audit --device cuda --kernel "tenant linear" --cases 100 2>&1 | tail -1
for rep in 1 2; do
  for v in "" "--stream-max-rows 16"; do
    timeout 150 $A/bitdelta bench multitenant --device cuda --random-7b --tenants 1,8,12,16,32 --requests 1 --new-tokens 32 --no-kernel-table $v 2>&1 \
      | grep -E "^ +[0-9]" | sed "s/^/[${v:-default}] /"
  done
done
