#!/usr/bin/env bash
# One GPU call for the codecs' many-tenant launches (issue 10): the PyTorch oracle of the codec files
# (tools/oracle/codec_golden.py), the codec kernels' audit and tests with CUDA as the device, their speed at 7B shapes
# for 1 and many tenants, and the one-row low-rank kernels' SASS (ptxas + cuobjdump, where the toolkit is there).
# Usage (device tool, carry [".gpu"]): bash tools/gpu/sgmv.sh   (ORACLE=0: skip the oracle; ROWS=1: bench rows)
# Under $OUT: codecs/ (goldens), tests-cuda.log, codecs.txt, sass/.
set -uo pipefail
A=/tmp/a
mkdir -p $A && tar -C $A -xJf .gpu/app.tar.xz
OUT=${OUT:-/tmp/out}; mkdir -p $OUT
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
if [ "${ORACLE:-1}" = 1 ]; then
  echo "== oracle"
  python3 tools/oracle/codec_golden.py --out $OUT/codecs 2>&1 | tail -3
fi
echo "== audit on CUDA (and every kernel's PTX)"
timeout 200 $A/bitdelta audit --device cuda --kernel "low-rank" --cases 200 --ptx $OUT/ptx 2>&1 | tail -5
timeout 120 $A/bitdelta audit --device cuda --kernel "sparse" --cases 200 2>&1 | tail -5
echo "== codec, pool and engine tests, CUDA as the device under test"
[ -d demo ] && export BITDELTA_DEMO="$PWD/demo"
BITDELTA_TEST_DEVICES=cuda timeout 300 $A/BitDeltaNative.Tests -class "BitDeltaNative.Tests.Models.CodecTests" \
  -class "BitDeltaNative.Tests.Models.CodecOracleTests" \
  -class "BitDeltaNative.Tests.Serving.EngineTests" -class "BitDeltaNative.Tests.Models.DeltaPoolTests" \
  > $OUT/tests-cuda.log 2>&1; echo "tests exit $?"; grep -E "\[FAIL\]|Total|Failed:|Passed" $OUT/tests-cuda.log | head -20
echo "== codec kernels at 7B shapes, one tenant and many"
timeout 300 $A/bitdelta bench codecs --device cuda --rows ${ROWS:-1,8} --tenants 1,8,32 2>&1 | tee $OUT/codecs.txt
echo "== SASS of the one-row low-rank kernels"
P=/usr/local/cuda/bin
if [ -x $P/ptxas ]; then
  mkdir -p $OUT/sass
  for k in LowRankLinear.ShrinkOneKernel LowRankLinear.ExpandOneKernel SparseLinear.Kernel; do
    $P/ptxas -arch=sm_90 -v $OUT/ptx/$k.ptx -o /tmp/$k.cubin 2>&1 | tail -2
    $P/cuobjdump -sass /tmp/$k.cubin > $OUT/sass/$k.sass; wc -l $OUT/sass/$k.sass
  done
fi
rm -rf $OUT/ptx
