#!/usr/bin/env bash
# Where the o projection's time goes at 8 tenants (4096², the worst of a layer's four streamed launches): the streamed
# grid's block timeline at 4 / 8 / 16 tenants, and the kernel table with the tenant-row blocks' two layouts
# (--stream-bits-split 1: whole K a warp; 4: K in four pieces).
# Usage (device tool, carry [".gpu"]): bash tools/gpu/o-proj.sh. Logs under $OUT.
set -uo pipefail
. tools/gpu/unpack.sh
timeout 120 $A/bitdelta bench multitenant --device cuda --timeline --tenants 8 --shapes 4096x4096,4096x11008 2>&1 | tee $OUT/timeline.txt | tail -60
for b in 1 4; do
  echo "== --stream-bits-split $b"
  timeout 150 $A/bitdelta bench multitenant --device cuda --kernel-only --tenants 4,8,16 --requests 1 --shapes 4096x4096,4096x11008 --stream-bits-split $b 2>&1 \
    | tee $OUT/kernel-split$b.txt | grep -E "^[0-9]+×"
done
