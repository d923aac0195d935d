# Sourced by the GPU scripts: unpacks the published app (.gpu/app.tar.xz, tools/gpu/pack.sh) into $A, the test fixtures
# beside it (a --lean pack leaves them out), makes $OUT (what the device tool brings back) and names the GPU.
A=/tmp/a
mkdir -p $A && tar -C $A -xJf .gpu/app.tar.xz
cp -r tests/fixtures $A/fixtures 2>/dev/null
OUT=${OUT:-/tmp/out}; mkdir -p $OUT
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
