#!/usr/bin/env bash
# Start-up on the GPU machine (issue 9): the kernels' PTX cache checked (its tests with CUDA as the device; the audit
# twice over one cache folder, the second run reading every kernel from it), then `bench startup` on a 7B checkpoint of
# random f16 weights, without the cache and with it. Then Nsight Compute's stall reasons for the one-tenant decode
# linear (StreamOneKernel) at 4096², for the kernel work that follows.
# Usage (device tool, carry [".gpu"], Llama-2's tokenizer.model in .gpu/shared/llama2): bash tools/gpu/startup.sh
set -uo pipefail
A=/tmp/a
mkdir -p $A && tar -C $A -xJf .gpu/app.tar.xz
OUT=${OUT:-/tmp/out}; mkdir -p $OUT
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
(python3 tools/oracle/bench_hf_7b.py --make /tmp/llama7b > $OUT/make.txt 2>&1; cp .gpu/shared/llama2/tokenizer.model /tmp/llama7b/) &
MAKE=$!
if [ -x $A/BitDeltaNative.Tests ]; then
echo "== PTX cache tests, CUDA as the device"
BITDELTA_TEST_DEVICES=cuda timeout 120 $A/BitDeltaNative.Tests -class "BitDeltaNative.Tests.Tensors.PtxCacheTests" > $OUT/tests-cuda.log 2>&1
echo "tests exit $?"; grep -E "\[FAIL\]|\[SKIP\]|Total" $OUT/tests-cuda.log | head
else echo "(no test executable in this pack: the tests were left out to fit the carry)"; fi
echo "== audit twice over one new cache folder"
rm -rf /tmp/kc
for i in 1 2; do
  BITDELTA_KERNEL_CACHE=/tmp/kc timeout 200 $A/bitdelta audit --device cuda --cases 5 > $OUT/audit$i.txt 2>&1
  echo "audit $i exit $?"; grep -E "FAIL|kernels loaded|all kernels" $OUT/audit$i.txt; ls /tmp/kc | wc -l
done
wait $MAKE; tail -1 $OUT/make.txt
echo "== start-up, no kernel cache, then a cache shared by the runs"
timeout 150 $A/bitdelta bench startup --model /tmp/llama7b --device cuda --runs 3 --no-kernel-cache 2>&1 | tee $OUT/startup-nocache.txt
timeout 150 $A/bitdelta bench startup --model /tmp/llama7b --device cuda --runs 3 2>&1 | tee $OUT/startup-cache.txt
echo "== Nsight Compute: StreamOneKernel at 4096², one tenant"
NCU=/usr/local/cuda/bin/ncu
timeout 200 $NCU --clock-control none --kernel-name regex:StreamOneKernel --launch-skip 4 --launch-count 1 \
  --section SpeedOfLight --section Occupancy --section WarpStateStats --section SchedulerStats --section LaunchStats --print-details all \
  $A/bitdelta bench multitenant --device cuda --random-7b --kernel-only --tenants 1 --iters 3 > $OUT/ncu-streamone.txt 2>&1
echo "ncu exit $?"; grep -E "Duration|DRAM Throughput|Registers|Achieved Occupancy|Stall|Warp Cycles|Issued Warp|No Eligible|Active Warps|Eligible Warps|Theoretical Occ" $OUT/ncu-streamone.txt | head -40
