#!/usr/bin/env bash
# On the GPU machine, from the unpacked folder: the test executable with CUDA as the device under test,
# then the same tests on ILGPU's CPU accelerator for comparison. Extra arguments go to the test runner
# (for example: --filter-class 'BitDeltaNative.Tests.Tensors.*').
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
echo "== tests with BITDELTA_TEST_DEVICES=cuda"
BITDELTA_TEST_DEVICES=cuda "$here/BitDeltaNative.Tests" "$@"
rc=$?
exit $rc
