#!/usr/bin/env bash
# One GPU call for decode at long context (issue 9: flash-decoding's split): `bench model --decode-context N` on the
# Llama-2-7B shape at 2400 positions and the Mistral-7B shape (8 kv heads, window 4096) at 4000, the KV cache in f16 as
# serve keeps it, at the engine's keys a range (256) and at 128 and 64; then the decode attention audit on CUDA.
# Usage (device tool, carry [".gpu"]): bash tools/gpu/long-decode.sh. Logs under $OUT.
set -uo pipefail
. tools/gpu/unpack.sh
timeout 100 $A/bitdelta audit --device cuda --kernel "attention decode" --cases 300 2>&1 | tail -1
for shape in "--random-7b --decode-context 2400" "--random-mistral-7b --decode-context 4000"; do
  for k in 256 128 64 256; do
    timeout 120 $A/bitdelta bench model --device cuda $shape --batches 1,4 --prefill 64 --new-tokens 32 --split-keys $k 2>&1 \
      | grep -E "^decode" | sed "s/^/[${shape%% *} split $k] /"
  done
done
