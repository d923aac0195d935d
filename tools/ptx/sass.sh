#!/usr/bin/env bash
# The kernels' SASS without a GPU: ILGPU's PTX (bitdelta audit --ptx) assembled for sm_90a by ptxas, then each
# kernel's registers, spills and loops (tools/ptx/sass-loops.py). ptxas and nvdisasm come from Debian's
# nvidia-cuda-toolkit 12.4 (tools/ptx/fetch-ptxas.sh: unpacked into a cache folder, never installed). ptxas 12.4
# reads PTX ISA up to 8.4, and ILGPU writes the ISA version of the driver it was built against (8.8), so the header
# is rewritten; a kernel that uses a later ISA feature fails here and says so. The driver's own compiler (CUDA 13 on the H200) may allocate differently: on
# 2026-12-05 the first ring form's 110 registers matched what Nsight Compute read on the H200.
#
# usage: tools/ptx/sass.sh [OUT] [KERNEL-PATTERN]   (OUT default /tmp/sass; pattern a grep -E over file names)
set -euo pipefail
cd "$(dirname "$0")/../.."
out=${1:-/tmp/sass}; pattern=${2:-.}
bin=$(bash tools/ptx/fetch-ptxas.sh)
cli=src/Cli/bin/Release/net10.0/bitdelta
[ -x "$cli" ] || dotnet build src/Cli -c Release -v q
rm -rf "$out" && mkdir -p "$out/ptx"
"$cli" audit --ptx "$out/ptx" --device ilgpu-cpu --kernel nothing --cases 1 > /dev/null
printf '%-44s %5s %6s %6s %s\n' kernel regs spillS spillL "loops of 100+ instructions, by where they end (an outer loop counts its inner ones once)"
for f in $(ls "$out/ptx" | grep -E "$pattern"); do
  k=${f%.ptx}
  sed -E 's/^\.version [0-9.]+/.version 8.4/; s/^\.target sm_90$/.target sm_90a/' "$out/ptx/$f" > "$out/$k.ptx"
  if ! info=$("$bin/ptxas" -arch=sm_90a -v -o "$out/$k.cubin" "$out/$k.ptx" 2>&1); then
    echo "$k: ptxas failed: $(echo "$info" | grep -m1 -i error)"; continue
  fi
  "$bin/nvdisasm" -c "$out/$k.cubin" > "$out/$k.sass"
  regs=$(echo "$info" | sed -nE 's/.*Used ([0-9]+) registers.*/\1/p' | head -1)
  ss=$(echo "$info" | sed -nE 's/.* ([0-9]+) bytes spill stores.*/\1/p' | head -1)
  sl=$(echo "$info" | sed -nE 's/.* ([0-9]+) bytes spill loads.*/\1/p' | head -1)
  loops=$(python3 tools/ptx/sass-loops.py "$out/$k.sass" --min 100 | sed -nE "s/.*loop 0x[0-9a-f]+-0x[0-9a-f]+: ([0-9]+) instructions.*/\1/p" | paste -sd' ')
  printf '%-44s %5s %6s %6s %s\n' "$k" "$regs" "$ss" "$sl" "${loops:--}"
done
echo "SASS in $out/*.sass; loops: python3 tools/ptx/sass-loops.py $out/KERNEL.sass"
