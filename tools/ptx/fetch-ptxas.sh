#!/usr/bin/env bash
# ptxas and nvdisasm for looking at the kernels' SASS without a GPU: Debian's nvidia-cuda-toolkit 12.4 (trixie,
# non-free), downloaded through apt into a temporary folder and unpacked into $BITDELTA_CUDA_TOOLS (default
# ~/.cache/bitdelta/cuda-12.4), never installed: the product needs no CUDA toolkit, only this offline look does
# (tools/ptx/sass.sh, and the SASS test in tests/Kernels/SassTests.cs, which is skipped without it).
# Prints the folder holding ptxas; exits non-zero, saying why, when it cannot be had.
set -euo pipefail
cuda=${BITDELTA_CUDA_TOOLS:-$HOME/.cache/bitdelta/cuda-12.4}
if [ ! -x "$cuda/usr/bin/ptxas" ]; then
  command -v apt-get >/dev/null && command -v dpkg >/dev/null || { echo "fetch-ptxas: needs apt-get and dpkg (Debian)" >&2; exit 1; }
  echo "fetch-ptxas: Debian's nvidia-cuda-toolkit 12.4 (~90 MB) into $cuda" >&2
  apt=$(mktemp -d); trap 'rm -rf "$apt"' EXIT
  mkdir -p "$apt/lists/partial"
  echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian trixie non-free" > "$apt/sources.list"
  o=(-oDir::State::Lists="$apt/lists" -oDir::Etc::SourceList="$apt/sources.list" -oDir::Etc::SourceParts=/dev/null -oDebug::NoLocking=1)
  apt-get "${o[@]}" update -qq >&2
  (cd "$apt" && apt-get "${o[@]}" download -qq nvidia-cuda-toolkit=12.4.131~12.4.1-2 >&2 2>/dev/null)
  mkdir -p "$cuda.part" && dpkg -x "$apt"/nvidia-cuda-toolkit_*.deb "$cuda.part"
  rm -rf "$cuda" && mv "$cuda.part" "$cuda"
fi
echo "$cuda/usr/bin"
