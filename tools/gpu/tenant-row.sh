#!/usr/bin/env bash
# One GPU call for a tenant's one-row step with its norms apart and its linears in two launches (GemvNorm's kernel
# without the norm, TenantPlainKernel; LlamaModel.TenantLinearsInOne): the route's tests and the audit on CUDA, then the
# 7B decode of one delta and of the engine's one tenant, against each linear its own launch (--tenant-linears-apart).
# Usage (device tool, carry [".gpu"]): bash tools/gpu/tenant-row.sh. Logs under $OUT.
set -uo pipefail
. tools/gpu/unpack.sh
(cd $A && BITDELTA_TEST_DEVICES=cuda timeout 150 ./BitDeltaNative.Tests -class "BitDeltaNative.Tests.Models.GemvNormRouteTests" > $OUT/tests-cuda.log 2>&1)
echo "tests exit $?"; grep -aE "\[FAIL\]|Total:" $OUT/tests-cuda.log | head
timeout 60 $A/bitdelta audit --device cuda --kernel "gemv norm" --cases 200 2>&1 | tail -1
for f in "" "--tenant-linears-apart" "" "--tenant-linears-apart"; do
  timeout 100 $A/bitdelta bench model --device cuda --random-7b --batches 1 --prefill 64 --random-delta --new-tokens 32 $f 2>&1 | grep -E "random delta" | grep -v "apart" | sed "s/^/[${f:-in one}] /"
done
for f in "" "--tenant-linears-apart"; do
  timeout 100 $A/bitdelta bench multitenant --device cuda --random-7b --tenants 1 --requests 1 --new-tokens 32 --no-kernel-table $f 2>&1 | grep -E "^ +[0-9]" | sed "s/^/[${f:-in one}] /"
done
