#!/usr/bin/env bash
# Nsight Compute on the streamed kernel at 4096² with 8 tenants of one row (the o projection of an 8-tenant step):
# throughput, occupancy, warp states and the source lines where warps stall.
# Usage (device tool, carry [".gpu"]): bash tools/gpu/ncu-stream8.sh. Logs under $OUT.
set -uo pipefail
. tools/gpu/unpack.sh
NCU=/usr/local/cuda/bin/ncu
timeout 300 $NCU --clock-control none --kernel-name regex:StreamOneKernel --launch-skip 4 --launch-count 1 \
  --section SpeedOfLight --section Occupancy --section WarpStateStats --section SchedulerStats --section LaunchStats \
  --section MemoryWorkloadAnalysis --section SourceCounters --print-details all \
  $A/bitdelta bench multitenant --device cuda --kernel-only --tenants 8 --requests 1 --shapes 4096x4096 --iters 3 > $OUT/ncu.txt 2>&1
echo "ncu exit $?"
grep -E "Duration|DRAM Throughput|Memory Throughput|L2 Cache Throughput|Registers|Achieved Occupancy|Theoretical Occ|Stall|Warp Cycles|Issued Warp|No Eligible|Active Warps|Eligible Warps|Block Limit|Shared Memory Config|Dynamic Shared|Static Shared" $OUT/ncu.txt | head -60
grep -n -A40 "Warp Stall Sampling\|Source Counters" $OUT/ncu.txt | head -90
