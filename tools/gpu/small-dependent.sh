#!/usr/bin/env bash
# One GPU call for the small kernels of a decode step as dependent launches (RoPE + cache write, SwiGLU, the embedding
# gather): their tests and audits on CUDA, then the 7B decode with them dependent against them launched the plain way
# (BITDELTA_PLAIN_LAUNCHES names them; every other kernel dependent in both), alternating, for the plain model, one
# delta, and the engine at 1, 8 and 32 tenants.
# Usage (device tool, carry [".gpu"]): bash tools/gpu/small-dependent.sh. Logs under $OUT.
set -uo pipefail
. tools/gpu/unpack.sh
(cd $A && BITDELTA_TEST_DEVICES=cuda timeout 200 ./BitDeltaNative.Tests -class "BitDeltaNative.Tests.Tensors.DependentLaunchTests" \
  -class "BitDeltaNative.Tests.Models.GemvNormRouteTests" -class "BitDeltaNative.Tests.Kernels.RowOpTests" > $OUT/tests-cuda.log 2>&1)
echo "tests exit $?"; grep -aE "\[FAIL\]|Total:" $OUT/tests-cuda.log | head
for k in "rope + kv cache write" embedding swiglu "attention decode"; do
  timeout 60 $A/bitdelta audit --device cuda --kernel "$k" --cases 200 2>&1 | tail -1 | sed "s/^/[$k] /"
done
SMALL="RopeCache.Kernel,SwiGlu.Kernel,Embedding.Kernel"
for rep in 1 2; do
  for mode in dependent plain; do
    if [ $mode = plain ]; then export BITDELTA_PLAIN_LAUNCHES=$SMALL; else unset BITDELTA_PLAIN_LAUNCHES; fi
    timeout 100 $A/bitdelta bench model --device cuda --random-7b --batches 1 --prefill 64 --new-tokens 32 2>&1 | grep -E "^decode batch 1" | sed "s/^/[$mode] /"
    timeout 100 $A/bitdelta bench model --device cuda --random-7b --batches 1 --prefill 64 --random-delta --new-tokens 32 2>&1 | grep -E "random delta" | sed "s/^/[$mode] /"
    timeout 150 $A/bitdelta bench multitenant --device cuda --random-7b --tenants 1,8,32 --requests 1 --new-tokens 32 --no-kernel-table 2>&1 | grep -E "^ +[0-9]" | sed "s/^/[$mode] /"
  done
done
unset BITDELTA_PLAIN_LAUNCHES
echo "== the multi-tenant kernel alone"
timeout 150 $A/bitdelta bench multitenant --device cuda --kernel-only --tenants 1,8,32 --requests 1 2>&1 | tee $OUT/kernel-table.txt | tail -30
