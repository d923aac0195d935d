#!/usr/bin/env bash
# The 4096² streamed call at 8 rows (8 tenants, and the base alone at 8 rows) under the knobs that move its base blocks:
# the own split of x off (--no-own-split: split blocks, base blocks wait), and the K splits aimed at 2, 4 (default) and
# 8 blocks a multiprocessor (--base-blocks).
# Usage (device tool, carry [".gpu"]): bash tools/gpu/o-proj2.sh. Logs under $OUT.
set -uo pipefail
. tools/gpu/unpack.sh
for v in "" "--no-own-split" "--base-blocks 2" "--base-blocks 8" "--base-blocks 6"; do
  echo "== ${v:-default}"
  timeout 100 $A/bitdelta bench multitenant --device cuda --kernel-only --tenants 1,4,8,16 --requests 1 --shapes 4096x4096 $v 2>&1 | grep -E "^[0-9]+×"
done
