#!/usr/bin/env bash
# The speed issue's one table on the GPU machine: a 7B checkpoint of random weights for the start-up figures
# (tools/oracle/bench_hf_7b.py --make, Llama-2's tokenizer.model from .gpu/shared), cuBLAS's GEMM through PyTorch to read
# `bench gemm` against, then `bitdelta bench all --record`, printed again as Markdown for bench/RESULTS.md.
# Usage (device tool, carry [".gpu"]): bash tools/gpu/bench-all.sh. Under $OUT: figures.jsonl, all.txt, table.md,
# torch-gemm.txt.
set -uo pipefail
A=/tmp/a
mkdir -p $A && tar -C $A -xJf .gpu/app.tar.xz
OUT=${OUT:-/tmp/out}; mkdir -p $OUT
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
python3 tools/oracle/bench_hf_7b.py --make /tmp/llama7b 2>&1 | tail -1
# start-up's generate needs a tokenizer: before the call, mkdir -p .gpu/shared/llama2 && cp ../shared/fixtures/llama2/tokenizer.model there
cp .gpu/shared/llama2/tokenizer.model /tmp/llama7b/ || echo "no .gpu/shared/llama2/tokenizer.model: bench startup will fail"
timeout 120 python3 tools/oracle/bench_torch_gemm.py --rows 512,2048 > $OUT/torch-gemm.txt 2>&1; cat $OUT/torch-gemm.txt
timeout 480 $A/bitdelta bench all --device cuda --model /tmp/llama7b --record $OUT/figures.jsonl > $OUT/all.txt 2>&1
echo "bench all exit $?"; tail -60 $OUT/all.txt
$A/bitdelta bench report $OUT/figures.jsonl --markdown > $OUT/table.md
