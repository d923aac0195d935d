#!/usr/bin/env bash
# Nsight Compute on the bit-serial products (BitsEndKernel) at 4096² with 32 tenants of one row, and on the streamed
# kernel at 8: which pipe is busy (binary tensor products, integer, load/store), the warp states, and the SASS of the
# binary products. Usage (device tool, carry [".gpu"]): bash tools/gpu/ncu-bits32.sh. Logs under $OUT.
set -uo pipefail
. tools/gpu/unpack.sh
NCU=/usr/local/cuda/bin/ncu
PIPES='regex:^sm__(inst_executed_pipe_[a-z0-9_]+\.avg\.pct_of_peak_sustained_active|pipe_[a-z0-9_]+_cycles_active\.avg\.pct_of_peak_sustained_active)$'
for k in "BitsEndKernel 32" "StreamOneKernel 8"; do
  set -- $k
  timeout 200 $NCU --clock-control none --kernel-name regex:$1 --launch-skip 4 --launch-count 1 \
    --section SpeedOfLight --section Occupancy --section WarpStateStats --section InstructionStats --section SourceCounters \
    --metrics "$PIPES" --print-details all \
    $A/bitdelta bench multitenant --device cuda --kernel-only --tenants $2 --requests 1 --shapes 4096x4096 --iters 3 > $OUT/ncu-$1.txt 2>&1
  echo "== $1 ($2 tenants): ncu exit $?"
  grep -E "Duration|DRAM Throughput|Registers Per|Achieved Occupancy|Issued Warp|No Eligible|Eligible Warps|Executed Ipc" $OUT/ncu-$1.txt | head -12
  grep -E "pipe_.*pct" $OUT/ncu-$1.txt | awk '$NF+0 > 3' | head -30
  grep -n -A24 "Warp Stall Sampling (All" $OUT/ncu-$1.txt | head -30
done
# the binary product in SASS: what ptxas makes of mma.sync m16n8k256 b1 on sm_90
timeout 120 $A/bitdelta audit --device cuda --kernel "tenant linear" --cases 4 --ptx /tmp/ptx > /dev/null 2>&1
f=$(grep -l "m16n8k256" /tmp/ptx/* | head -1); echo "ptx with b1: $f"
if [ -n "$f" ]; then
  /usr/local/cuda/bin/ptxas -arch=sm_90 -o /tmp/b1.cubin "$f" 2>&1 | tail -2
  /usr/local/cuda/bin/cuobjdump -sass /tmp/b1.cubin > $OUT/b1.sass
  grep -o "[A-Z0-9]*MMA[.A-Z0-9]*" $OUT/b1.sass | sort | uniq -c
fi
