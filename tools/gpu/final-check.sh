#!/usr/bin/env bash
# The final code's tests on CUDA for what this stop changed (the parts, the streamed form's helper at any rows, the
# weights and pool layouts under the goldens), and the tenant linear's audit.
# Usage (device tool, carry [".gpu"]): bash tools/gpu/final-check.sh. Logs under $OUT.
set -uo pipefail
. tools/gpu/unpack.sh
export BITDELTA_DEMO="$PWD/demo"
(cd $A && BITDELTA_TEST_DEVICES=cuda timeout 400 ./BitDeltaNative.Tests -class "BitDeltaNative.Tests.Kernels.TenantLinearStreamTests" \
  -class "BitDeltaNative.Tests.Kernels.TenantLinearPartsTests" -class "BitDeltaNative.Tests.Models.TenantPartsTests" \
  -class "BitDeltaNative.Tests.Kernels.TenantLinearBitsTests" -class "BitDeltaNative.Tests.Models.DeltaPoolTests" \
  -class "BitDeltaNative.Tests.Models.ForwardGoldenTests" -class "BitDeltaNative.Tests.Models.LlamaWeightsTests" \
  -class "BitDeltaNative.Tests.Models.GemvNormRouteTests" -class "BitDeltaNative.Tests.Serving.EngineTests" \
  -class "BitDeltaNative.Tests.Serving.ServerTests" -class "BitDeltaNative.Tests.Models.HalfPrefillTests" > $OUT/tests-cuda.log 2>&1)
echo "tests exit $?"; grep -aE "\[FAIL\]|Total:" $OUT/tests-cuda.log | head
timeout 120 $A/bitdelta audit --device cuda --kernel "tenant linear" --cases 100 2>&1 | tail -1
