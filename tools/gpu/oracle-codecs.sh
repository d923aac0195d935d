#!/usr/bin/env bash
# The codec oracle on the GPU machine and the C# tests that read it, with CUDA as the device: runs
# tools/oracle/codec_golden.py, puts its goldens beside the published test binary, and runs CodecOracleTests.
# Usage (device tool, carry [".gpu"]): bash tools/gpu/oracle-codecs.sh. Goldens under $OUT/codecs: copy them into
# tests/fixtures/codecs.
set -uo pipefail
A=/tmp/a
mkdir -p $A && tar -C $A -xJf .gpu/app.tar.xz
OUT=${OUT:-/tmp/out}; mkdir -p $OUT
python3 tools/oracle/codec_golden.py --out $OUT/codecs 2>&1 | tee $OUT/oracle.log | grep -v "err " ; grep -c "err " $OUT/oracle.log
cp -r $OUT/codecs/. $A/fixtures/codecs/
BITDELTA_TEST_DEVICES=cuda timeout 300 $A/BitDeltaNative.Tests -class "BitDeltaNative.Tests.Models.CodecOracleTests" > $OUT/tests.log 2>&1
echo "tests exit $?"; grep -E "\[FAIL\]|Total:|Assert|error" $OUT/tests.log | head -30
