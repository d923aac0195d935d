#!/usr/bin/env bash
# Is it the order of the sign reads that holds the bit-serial products back? The kernel table at 8–32 tenants of one
# row with its new line: the signs read as the products walk them against each warp's span read contiguously, same
# loads in flight, both with two chunks a step, and a tile of 8 rows at a time (ReadSignPatterns in BenchMultitenant.cs).
# Usage (device tool, carry [".gpu"]): bash tools/gpu/read-signs.sh. Logs under $OUT.
set -uo pipefail
. tools/gpu/unpack.sh
timeout 200 $A/bitdelta bench multitenant --device cuda --kernel-only --tenants 8,16,32 --requests 1 --iters 10 2>&1 \
  | tee $OUT/kernel.txt | grep -E "signs|^[0-9]+×"
