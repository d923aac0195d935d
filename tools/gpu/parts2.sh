#!/usr/bin/env bash
# Second GPU call for the parts in one launch: after RunParts left one row (and two of the base alone) to GemvOne and took
# the three-launch form past the streamed rows, the tests on CUDA again (GemvNormRouteTests among them), then the 7B
# decode at 1–32 tenants of one request in one launch against apart (--parts-apart), alternating, and the step profile
# at 8 tenants (where the time goes now).
# Usage (device tool, carry [".gpu"]): bash tools/gpu/parts2.sh. Logs under $OUT.
set -uo pipefail
. tools/gpu/unpack.sh
(cd $A && BITDELTA_TEST_DEVICES=cuda timeout 300 ./BitDeltaNative.Tests -class "BitDeltaNative.Tests.Kernels.TenantLinearPartsTests" \
  -class "BitDeltaNative.Tests.Models.TenantPartsTests" -class "BitDeltaNative.Tests.Kernels.TenantLinearStreamTests" \
  -class "BitDeltaNative.Tests.Kernels.TenantLinearBitsTests" -class "BitDeltaNative.Tests.Models.GemvNormRouteTests" \
  -class "BitDeltaNative.Tests.Serving.EngineTests" -class "BitDeltaNative.Tests.Models.DeltaPoolTests" \
  -class "BitDeltaNative.Tests.Models.ForwardGoldenTests" > $OUT/tests-cuda.log 2>&1)
echo "tests exit $?"; grep -aE "\[FAIL\]|Total:" $OUT/tests-cuda.log | head
timeout 120 $A/bitdelta audit --device cuda --kernel "tenant linear" --cases 100 2>&1 | tail -1
for rep in 1 2; do
  for mode in in-one apart; do
    flag=""; [ $mode = apart ] && flag="--parts-apart"
    timeout 150 $A/bitdelta bench multitenant --device cuda --random-7b --tenants 1,2,4,8,16,24,32 --requests 1 --new-tokens 32 --no-kernel-table $flag 2>&1 \
      | tee -a $OUT/decode-$mode.txt | grep -E "^ +[0-9]" | sed "s/^/[$mode] /"
  done
done
echo "== step profile, 8 tenants"
timeout 120 $A/bitdelta bench multitenant --device cuda --random-7b --tenants 8 --requests 1 --step-profile --no-kernel-table 2>&1 | tee $OUT/profile.txt | tail -30
