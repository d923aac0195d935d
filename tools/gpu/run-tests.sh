#!/usr/bin/env bash
# On the GPU machine, from the unpacked folder: the test executable with CUDA as the device under test,
# then the same tests on ILGPU's CPU accelerator for comparison. Extra arguments go to the test runner
# (for example: -class 'BitDeltaNative.Tests.Tensors.*'). Run it from the repository root: the demo tests read
# demo/ there (BITDELTA_DEMO), and the tokenizer tests read .gpu/shared (copy ../shared/fixtures there; ../shared
# does not travel to the GPU machine).
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
[ -d demo ] && export BITDELTA_DEMO="$PWD/demo"
[ -d .gpu/shared ] && export BITDELTA_SHARED="$PWD/.gpu/shared"
echo "== tests with BITDELTA_TEST_DEVICES=cuda"
BITDELTA_TEST_DEVICES=cuda "$here/BitDeltaNative.Tests" "$@"
rc=$?
exit $rc
