#!/usr/bin/env bash
# One GPU call for the decode step (issue 9): the attention audit on CUDA, where one decode step's time goes kernel by
# kernel (`bench multitenant --step-profile`) at 64 and 1024 positions, then the decode table at 1, 8, 32 tenants.
# Usage (device tool, carry [".gpu"]): bash tools/gpu/step-profile.sh. Logs under $OUT.
set -uo pipefail
A=/tmp/a
mkdir -p $A && tar -C $A -xJf .gpu/app.tar.xz
OUT=${OUT:-/tmp/out}; mkdir -p $OUT
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
echo "== audit: every kernel on CUDA; kernel and attention tests with CUDA as the device"
timeout 150 $A/bitdelta audit --device cuda --cases 200 2>&1 | grep -E "attention|rmsnorm|rope|fail|FAIL|match" | head -12
BITDELTA_TEST_DEVICES=cuda timeout 150 $A/BitDeltaNative.Tests -class "BitDeltaNative.Tests.Kernels.KernelTests" \
  -class "BitDeltaNative.Tests.Kernels.AttentionTests" > $OUT/tests-cuda.log 2>&1; echo "tests exit $?"; grep -E "\[FAIL\]|Total:" $OUT/tests-cuda.log | head
echo "== step profile"
timeout 200 $A/bitdelta bench multitenant --device cuda --random-7b --tenants 1,8,32 --no-kernel-table --step-profile --prompt-tokens 64 \
  --record $OUT/figures.jsonl 2>&1 | tee $OUT/profile.txt | tail -60
timeout 150 $A/bitdelta bench multitenant --device cuda --random-7b --tenants 1 --no-kernel-table --step-profile --prompt-tokens 1024 \
  2>&1 | tee $OUT/profile-1024.txt | grep -A12 "tenants × 1 request:"
echo "== decode table"
timeout 200 $A/bitdelta bench multitenant --device cuda --random-7b --tenants 1,8,32 --requests 1 --new-tokens 32 --no-kernel-table \
  --record $OUT/figures.jsonl 2>&1 | tee $OUT/decode.txt | tail -12
