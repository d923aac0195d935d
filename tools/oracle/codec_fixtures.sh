#!/usr/bin/env bash
# The delta files that tools/oracle/codec_golden.py reads: `bitdelta compress` of two tiny models' fine-tunes
# (tests/fixtures/bitdelta) into tests/fixtures/codecs/NAME/, with each codec's less common settings on purpose: a
# 3-bit-a-weight low-rank budget (two slices at 64×64), 4-bit sparse codes in groups of 32 and 2-bit ones in groups of 16.
# The sparse files skip the zstd stage (--no-zstd): the GPU machine's Python has no zstd module, and the stage itself is
# tested in CodecTests. Round to nearest (no calibration), so the files depend only on the models. Run from the repository root
# with the CLI built (dotnet build src/Cli -c Release), then the oracle on the GPU machine.
set -euo pipefail
B="dotnet src/Cli/bin/Release/net10.0/bitdelta.dll"
tmp=$(mktemp -d)
for m in llama-f16 llama3-bf16-tied; do
  dst=tests/fixtures/codecs/$m
  mkdir -p "$dst"
  args=(--base tests/fixtures/models/$m --finetuned tests/fixtures/bitdelta/$m --device cpu)
  $B compress "${args[@]}" --out "$tmp/$m-lr" --codec lowrank-mp --budget 3 --group 32
  $B compress "${args[@]}" --out "$tmp/$m-sp4" --codec sparse-lowbit --bits 4 --group 32 --no-zstd
  $B compress "${args[@]}" --out "$tmp/$m-sp2" --codec sparse-lowbit --bits 2 --group 16 --no-zstd
  cp "$tmp/$m-lr/delta.safetensors" "$dst/lowrank-mp.safetensors"
  cp "$tmp/$m-sp4/delta.safetensors" "$dst/sparse-lowbit-4.safetensors"
  cp "$tmp/$m-sp2/delta.safetensors" "$dst/sparse-lowbit-2.safetensors"
done
rm -rf "$tmp"
