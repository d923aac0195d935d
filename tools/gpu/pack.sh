#!/usr/bin/env bash
# Publishes the bitdelta CLI and the test executable self-contained for linux-x64 into one folder
# (they share the runtime, so it is packed once) and packs it as .gpu/app.tar.xz for the GPU machine,
# which has the NVIDIA driver but no .NET. .gpu/ is git-ignored and carried to the device.
#
# Then, with the device tool (carry [".gpu"]):
#   mkdir -p /tmp/a && tar -C /tmp/a -xJf .gpu/app.tar.xz && /tmp/a/BitDeltaNative.Tests && /tmp/a/bitdelta audit --device cuda
# tools/gpu/run-tests.sh is that command as a script (tests on CUDA and the CPU accelerator).
set -euo pipefail
cd "$(dirname "$0")/../.."
rm -rf .gpu/app && mkdir -p .gpu
# the tests first, then the CLI ReadyToRun (its assemblies, ILGPU's among them, precompiled to machine code, so a
# process does not spend its start-up JIT-compiling ILGPU's compiler): the CLI's copies of the shared ones win
dotnet publish tests -c Release -r linux-x64 --self-contained -o .gpu/app -p:DebugType=none >/dev/null
dotnet publish src/Cli -c Release -r linux-x64 --self-contained -o .gpu/app -p:DebugType=none -p:PublishReadyToRun=true >/dev/null
cp tools/gpu/run-tests.sh .gpu/app/
# the debugger's libraries are not used there; --lean also leaves the test fixtures out (the tests that read them then
# say they are absent) and packs harder, for calls that carry more beside the pack (the 64 MiB cap counts the tree too)
rm -f .gpu/app/libmscordaccore.so .gpu/app/libmscordbi.so .gpu/app/createdump
level=-6
if [ "${1:-}" = "--lean" ]; then rm -rf .gpu/app/fixtures; level=-9e; fi
tar -C .gpu/app -cf - . | xz -T2 $level > .gpu/app.tar.xz
rm -rf .gpu/app
ls -l .gpu/app.tar.xz | awk '{printf "packed .gpu/app.tar.xz: %.1f MiB (cap 64 MiB)\n", $5/1048576}'
