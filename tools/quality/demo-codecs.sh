#!/usr/bin/env bash
# The codecs issue's quality table on the demo pair (demo/: a 4.7M-parameter story base and its arithmetic fine-tune):
# base, fine-tune, and the fine-tune compressed by each codec, with perplexity on both held-out texts and exact-match
# accuracy on 200 arithmetic questions, beside each delta's size. Calibration (distillation, GPTQ) uses stories only
# (calib.stories.txt: generic text, nothing of the task). Runs on the CPU by default (about 10 minutes on 2 cores);
# DEVICE=cuda for the GPU. Usage: bash tools/quality/demo-codecs.sh [OUTDIR]   (default /tmp/demo-codecs)
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${1:-/tmp/demo-codecs}; DEVICE=${DEVICE:-cpu}
mkdir -p "$OUT"
dotnet build -c Release src/Cli >/dev/null
B() { dotnet run -c Release --project src/Cli --no-build -- "$@"; }
D=demo/data; CAL=$D/calib.stories.txt
EVAL=(--data $D/stories.valid.txt --data $D/arithmetic.valid.txt --task $D/arithmetic.qa.jsonl --context 256 --stride 128 --device $DEVICE)
# name | compress arguments (empty: no delta)
configs=(
  "bitdelta|--codec bitdelta"
  "bitdelta, distilled|--codec bitdelta --calib $CAL"
  "lowrank-mp, rtn|--codec lowrank-mp"
  "lowrank-mp, gptq|--codec lowrank-mp --calib $CAL"
  "lowrank-mp 2.2 bits, gptq|--codec lowrank-mp --calib $CAL --budget 2.2"
  "sparse-lowbit 2-bit, rtn|--codec sparse-lowbit"
  "sparse-lowbit 2-bit, gptq|--codec sparse-lowbit --calib $CAL"
  "sparse-lowbit 4-bit, gptq|--codec sparse-lowbit --bits 4 --calib $CAL"
)
[ -f "$OUT/reference.json" ] || B eval --base demo/base --model demo/finetuned "${EVAL[@]}" --json "$OUT/reference.json" >/dev/null
i=0
for c in "${configs[@]}"; do
  name=${c%%|*}; args=${c#*|}; dir="$OUT/c$i"; i=$((i+1))
  [ -f "$dir/delta.safetensors" ] || B compress --base demo/base --finetuned demo/finetuned --out "$dir" $args --device $DEVICE >/dev/null
  [ -f "$dir/eval.json" ] || B eval --base demo/base --delta "$dir/delta.safetensors" --skip-base "${EVAL[@]}" --json "$dir/eval.json" >/dev/null
  echo "$name" > "$dir/name"
done
python3 - "$OUT" <<'PY'
import json, os, sys
out = sys.argv[1]
def row(name, m, size):
    s, a = m["stories.valid.txt"]["perplexity"], m["arithmetic.valid.txt"]["perplexity"]
    acc = f'{100 * m["arithmetic.qa.jsonl accuracy"]:.1f}%'
    print(f"| {name} | {size} | {s:.4f} | {a:.4g} | {acc} |")
ref = json.load(open(f"{out}/reference.json"))["models"]
print("| model | delta file | perplexity, stories | perplexity, arithmetic | arithmetic accuracy |")
print("| --- | --- | --- | --- | --- |")
row("base", ref["base"], "")
row("fine-tune", ref["model"], "(9.31 MB model)")
i = 0
while os.path.isdir(f"{out}/c{i}"):
    d = f"{out}/c{i}"
    m = json.load(open(f"{d}/eval.json"))["models"]["compressed"]
    row(open(f"{d}/name").read().strip(), m, f"{os.path.getsize(d + '/delta.safetensors') / 1e6:.2f} MB")
    i += 1
PY
