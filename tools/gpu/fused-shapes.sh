#!/usr/bin/env bash
# One GPU call before fusing a multi-row step's linears (q/k/v in one launch, gate/up in one): the multi-tenant kernel
# alone at the fused shapes (12288×4096 = q/k/v of Llama-2-7B, 22016×4096 = gate/up) against the separate ones, at
# 1–32 tenants of one row; plus the decode attention's tests and audit on CUDA (Elem.Widen, c3627b2).
# Usage (device tool, carry [".gpu"]): bash tools/gpu/fused-shapes.sh. Logs under $OUT.
set -uo pipefail
. tools/gpu/unpack.sh
(cd $A && BITDELTA_TEST_DEVICES=cuda timeout 200 ./BitDeltaNative.Tests -class "BitDeltaNative.Tests.Kernels.AttentionTests" > $OUT/tests-cuda.log 2>&1)
echo "tests exit $?"; grep -aE "\[FAIL\]|Total:|total:|passed|failed" $OUT/tests-cuda.log | tail -5
timeout 90 $A/bitdelta audit --device cuda --kernel "attention decode" --cases 300 2>&1 | tail -1
timeout 400 $A/bitdelta bench multitenant --device cuda --kernel-only --tenants 1,2,4,8,16,32 --requests 1 \
  --shapes 4096x4096,12288x4096,11008x4096,22016x4096 2>&1 | tee $OUT/kernel-table.txt | tail -32
