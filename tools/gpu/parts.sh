#!/usr/bin/env bash
# One GPU call for q/k/v in one launch and gate/up in one (TenantLinear.RunParts, LlamaModel.TenantPartsInOne): the
# parts' tests and the streamed form's on CUDA, the tenant linear's audit, then the 7B decode through the engine at
# 1–16 tenants of one request with the parts in one launch against each linear its own (--parts-apart), alternating,
# and the kernel alone at the fused shapes (12288×4096 = q/k/v, 22016×4096 = gate/up) after BaseSplit's change.
# Usage (device tool, carry [".gpu"]): bash tools/gpu/parts.sh. Logs under $OUT.
set -uo pipefail
. tools/gpu/unpack.sh
(cd $A && BITDELTA_TEST_DEVICES=cuda timeout 300 ./BitDeltaNative.Tests -class "BitDeltaNative.Tests.Kernels.TenantLinearPartsTests" \
  -class "BitDeltaNative.Tests.Models.TenantPartsTests" -class "BitDeltaNative.Tests.Kernels.TenantLinearStreamTests" \
  -class "BitDeltaNative.Tests.Kernels.TenantLinearBitsTests" -class "BitDeltaNative.Tests.Models.GemvNormRouteTests" \
  -class "BitDeltaNative.Tests.Serving.EngineTests" > $OUT/tests-cuda.log 2>&1)
echo "tests exit $?"; grep -aE "\[FAIL\]|Total:" $OUT/tests-cuda.log | head
timeout 120 $A/bitdelta audit --device cuda --kernel "tenant linear" --cases 100 2>&1 | tail -1
for rep in 1 2; do
  for mode in in-one apart; do
    flag=""; [ $mode = apart ] && flag="--parts-apart"
    timeout 150 $A/bitdelta bench multitenant --device cuda --random-7b --tenants 1,2,4,8,16,32 --requests 1 --new-tokens 32 --no-kernel-table $flag 2>&1 \
      | tee -a $OUT/decode-$mode.txt | grep -E "^ +[0-9]" | sed "s/^/[$mode] /"
  done
done
echo "== the kernel alone at the fused shapes"
timeout 200 $A/bitdelta bench multitenant --device cuda --kernel-only --tenants 1,2,4,8,16 --requests 1 --shapes 12288x4096,22016x4096 2>&1 \
  | tee $OUT/kernel-table.txt | grep -E "^[0-9]+×"
