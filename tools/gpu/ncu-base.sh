#!/usr/bin/env bash
# Where the many-row base products wait (TenantLinearBase.cs BaseKernel, the second of the three launches a linear past
# 8 decode rows): one 32-tenant step's time kernel by kernel, then Nsight Compute's stall samples per SASS instruction
# on BaseKernel at 4096², 32 tenants of one row, and its duration at 9–32 tenants.
# Usage (device tool, carry [".gpu"]): bash tools/gpu/ncu-base.sh. Logs under $OUT.
set -uo pipefail
. tools/gpu/unpack.sh
timeout 150 $A/bitdelta bench multitenant --device cuda --random-7b --tenants 32 --no-kernel-table --step-profile --prompt-tokens 64 \
  2>&1 | tee $OUT/profile.txt | grep -A30 "tenants × 1 request:" | head -40
bash tools/gpu/ncu-source.sh BaseKernel 4096x4096 32 9 16 24 32
python3 tools/gpu/sass-stalls.py $OUT/src-BaseKernel.csv 30
