#!/usr/bin/env bash
# With q/k/v and gate/up fused, is the streamed form still the better one at 9–16 decode rows? The 7B decode through the
# engine at 10, 12 and 16 tenants of one request as the engine picks (streamed up to 16 rows) against --stream-max-rows 8
# (the three-launch form past 8), alternating; then the same at 4 tenants with the tenant-row blocks' K in four pieces.
# Usage (device tool, carry [".gpu"]): bash tools/gpu/stream-rows.sh. Logs under $OUT.
set -uo pipefail
. tools/gpu/unpack.sh
for rep in 1 2; do
  for v in "" "--stream-max-rows 8"; do
    timeout 150 $A/bitdelta bench multitenant --device cuda --random-7b --tenants 10,12,16 --requests 1 --new-tokens 32 --no-kernel-table $v 2>&1 \
      | grep -E "^ +[0-9]" | sed "s/^/[${v:-default}] /"
  done
done
for v in "" "--stream-bits-split 4"; do
  timeout 150 $A/bitdelta bench multitenant --device cuda --random-7b --tenants 2,3,4 --requests 1 --new-tokens 32 --no-kernel-table $v 2>&1 \
    | grep -E "^ +[0-9]" | sed "s/^/[${v:-default}] /"
done
