#!/usr/bin/env bash
# Nsight Compute's stall samples per SASS instruction for one kernel of `bitdelta bench multitenant` (its source page
# as CSV; summarise it here with tools/gpu/sass-stalls.py), with speed of light, occupancy, warp states and launch
# statistics; and that kernel's duration at several tenant counts (one row each), to split its time into a part that
# grows with the bytes and a part that does not.
# Usage (device tool, carry [".gpu"]): bash tools/gpu/ncu-source.sh KERNEL SHAPE TENANTS [TENANT-COUNTS…]
#   (BENCH_ARGS: further options for the bench, e.g. BENCH_ARGS="--base-ring-form 2")
#   e.g. bash tools/gpu/ncu-source.sh BitsEndKernel 4096x4096 32 9 12 16 24 32
# Logs under $OUT: ncu-KERNEL.txt, src-KERNEL.csv, durations.txt.
set -uo pipefail
. tools/gpu/unpack.sh
NCU=/usr/local/cuda/bin/ncu
k=$1 shape=$2 tenants=$3; shift 3
run() { echo $A/bitdelta bench multitenant --device cuda --kernel-only --tenants $1 --requests 1 --shapes $shape --iters 3 ${BENCH_ARGS:-}; }
timeout 150 $NCU --clock-control none --kernel-name regex:"$k\$" --launch-skip 4 --launch-count 1 --section SpeedOfLight --section Occupancy \
  --section WarpStateStats --section LaunchStats --section InstructionStats --print-details all $(run $tenants) > $OUT/ncu-$k.txt 2>&1
echo "== $k, $shape, $tenants tenants: ncu exit $?"
grep -E "Duration|DRAM Throughput|Registers Per|Achieved Occupancy|Issued Warp|Executed Instructions  |Waves Per SM" $OUT/ncu-$k.txt | head -8
timeout 150 $NCU --clock-control none --kernel-name regex:"$k\$" --launch-skip 4 --launch-count 1 --section SourceCounters \
  --page source --print-source sass --csv $(run $tenants) > $OUT/src-$k.csv 2>&1
echo "source page: $(wc -l < $OUT/src-$k.csv) lines"
for T in "$@"; do
  d=$(timeout 100 $NCU --clock-control none --kernel-name regex:"$k\$" --launch-skip 4 --launch-count 3 --section SpeedOfLight $(run $T) 2>&1 \
      | grep -E "^ +Duration" | awk '{print $NF}' | sort -n | head -1)
  echo "$k $shape $T tenants: $d µs (least of 3)" | tee -a $OUT/durations.txt
done
