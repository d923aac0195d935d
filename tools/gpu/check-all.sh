#!/usr/bin/env bash
# One H100 call: unpack, tests with CUDA as the device, the kernel audit, the demo on CUDA, the saved full
# model checked by transformers, the GEMV bench, and the tokenizer oracles (sentencepiece 0.2.x, HF tokenizers)
# whose fixtures come back under $OUT. Before packing: mkdir -p .gpu/shared/fixtures/llama2 and copy
# ../shared/fixtures/llama2/tokenizer.model there.
# Usage (device tool, carry [".gpu"]): bash tools/gpu/check-all.sh
set -uo pipefail
A=/tmp/a
mkdir -p $A && tar -C $A -xJf .gpu/app.tar.xz
OUT=${OUT:-/tmp/out}; mkdir -p $OUT
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader
echo "== tests, CUDA as the device under test"
export BITDELTA_DEMO="$PWD/demo" BITDELTA_SHARED="$PWD/.gpu/shared"
BITDELTA_TEST_DEVICES=cuda $A/BitDeltaNative.Tests 2>&1 | tee $OUT/tests-cuda.log | grep -E "^\s*(failed|Failed|Assert)|Total:|error" | head -40
echo "== audit"
$A/bitdelta audit --device cuda --cases 200 2>&1 | tee $OUT/audit.txt
echo "== demo"
( time $A/bitdelta demo --device cuda --out /tmp/demo-out ) 2>&1 | tee $OUT/demo.txt
echo "== --save-full-model read by transformers"
$A/bitdelta compress --base demo/base --finetuned demo/finetuned --out /tmp/full --save-full-model && python3 tools/oracle/check_full_model.py /tmp/full/model 2>&1 | grep -v Loading | tee $OUT/full-model.txt
echo "== gemv bench"
for dt in f16 bf16; do for r in 1 8; do $A/bitdelta bench gemv --device cuda --dtype $dt --rows $r 2>&1; done; done | tee $OUT/gemv.txt
echo "== tokenizer oracles"
python3 tools/oracle/tokenizer_fixture.py --model .gpu/shared/fixtures/llama2/tokenizer.model --out $OUT/llama2_ids.json 2>&1 | tail -2
python3 tools/oracle/hf_tokenizer_fixture.py --out-dir $OUT/tok 2>&1 | tail -3 && tar -C $OUT/tok -cf $OUT/tok.tar . && rm -rf $OUT/tok
