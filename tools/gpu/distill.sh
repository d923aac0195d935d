#!/usr/bin/env bash
# One H100 call for scale distillation (issue 6): the backward kernels and the distillation tests with CUDA as the
# device under test, the audit, then the demo pair distilled on both calibration files and evaluated beside the
# fine-tune and the plain binarized delta. Usage (device tool, carry [".gpu"]): bash tools/gpu/distill.sh
# With "7b" as the argument it instead times distillation steps on a random Llama-2-7B-shaped pair (made here).
set -uo pipefail
A=/tmp/a
mkdir -p $A && tar -C $A -xJf .gpu/app.tar.xz
OUT=${OUT:-/tmp/out}; mkdir -p $OUT
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
if [ "${1:-}" = 7b ]; then
  python3 tools/oracle/bench_hf_7b.py --make /tmp/b7 2>&1 | grep -v Warn | tail -1
  python3 tools/oracle/bench_hf_7b.py --make-finetune /tmp/b7 /tmp/f7 2>&1 | grep -v Warn | tail -1
  ( time $A/bitdelta compress --base /tmp/b7 --finetuned /tmp/f7 --out /tmp/d7 ) 2>&1 | tail -5
  $A/bitdelta bench distill --device cuda --base /tmp/b7 --delta /tmp/d7/delta.safetensors --finetuned /tmp/f7 --steps 5 2>&1 | tee $OUT/bench-distill-7b.txt
  exit 0
fi
export BITDELTA_DEMO="$PWD/demo"
echo "== tests, CUDA as the device under test"
BITDELTA_TEST_DEVICES=cuda $A/BitDeltaNative.Tests -class "BitDeltaNative.Tests.Autograd.GradKernelTests" -class "BitDeltaNative.Tests.Autograd.VarTests" \
  -class "BitDeltaNative.Tests.Models.DistillationTests" -class "BitDeltaNative.Tests.Kernels.KernelTests" 2>&1 | tee $OUT/tests-cuda.log | grep -E "\[FAIL\]|Total:" | head -40
echo "== audit"
$A/bitdelta audit --device cuda --cases 200 2>&1 | tee $OUT/audit.txt | tail -40
echo "== demo distillation"
D=demo/data
$A/bitdelta compress --base demo/base --finetuned demo/finetuned --out /tmp/plain --device cuda | tail -1
for c in stories mixed; do
  ( time $A/bitdelta compress --base demo/base --finetuned demo/finetuned --out /tmp/dist-$c --calib $D/calib.$c.txt --device cuda ) 2>&1 | tee $OUT/compress-$c.txt
  cp /tmp/dist-$c/distill-loss.csv $OUT/loss-$c.csv; cp /tmp/dist-$c/distill-loss.png $OUT/loss-$c.png
done
for d in plain dist-stories dist-mixed; do
  skip=""; [ $d != plain ] && skip="--skip-base"
  $A/bitdelta eval --base demo/base --model demo/finetuned --delta /tmp/$d/delta.safetensors --data $D/stories.valid.txt --data $D/arithmetic.valid.txt \
    --task $D/arithmetic.qa.jsonl --context 256 --stride 128 --max-new-tokens 6 --device cuda $skip --json $OUT/eval-$d.json 2>&1 | tail -12
done
