#!/usr/bin/env bash
# One GPU call for the codecs (issue 10) and start-up (issue 9): the codec kernels' audit and tests with CUDA as the
# device, their speed at 7B shapes, then a 7B checkpoint of random weights (tools/oracle/bench_hf_7b.py --make, with
# Llama-2's tokenizer.model from .gpu/shared) and `bitdelta bench startup` on it. Usage (device tool, carry [".gpu"]):
#   bash tools/gpu/codecs.sh
# Logs under $OUT: tests-cuda.log, codecs.txt, startup.txt.
set -uo pipefail
A=/tmp/a
mkdir -p $A && tar -C $A -xJf .gpu/app.tar.xz
OUT=${OUT:-/tmp/out}; mkdir -p $OUT
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
echo "== audit of the codec kernels on CUDA"
timeout 120 $A/bitdelta audit --device cuda --kernel "low-rank" --cases 50 2>&1 | tail -4
timeout 120 $A/bitdelta audit --device cuda --kernel "sparse" --cases 50 2>&1 | tail -4
echo "== codec and engine tests, CUDA as the device under test"
[ -d demo ] && export BITDELTA_DEMO="$PWD/demo"
BITDELTA_TEST_DEVICES=cuda timeout 240 $A/BitDeltaNative.Tests -class "BitDeltaNative.Tests.Models.CodecTests" \
  -class "BitDeltaNative.Tests.Serving.EngineTests" -class "BitDeltaNative.Tests.Models.DeltaPoolTests" \
  > $OUT/tests-cuda.log 2>&1; echo "tests exit $?"; grep -E "\[FAIL\]|Total|Failed:|Passed" $OUT/tests-cuda.log | head -20
echo "== codec kernels at 7B shapes"
timeout 200 $A/bitdelta bench codecs --device cuda --rows 1,8 2>&1 | tee $OUT/codecs.txt
if [ "${STARTUP:-1}" = 1 ]; then
  echo "== start-up on a 7B checkpoint"
  python3 tools/oracle/bench_hf_7b.py --make /tmp/llama7b 2>&1 | tail -1
  cp .gpu/shared/llama2/tokenizer.model /tmp/llama7b/
  timeout 300 $A/bitdelta bench startup --model /tmp/llama7b --device cuda --runs 3 2>&1 | tee $OUT/startup.txt
fi
