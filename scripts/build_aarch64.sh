#!/usr/bin/env bash
# Builds knowcache-device for aarch64 Linux into build/aarch64/ (cross, on x86-64).
# Needs what scripts/setup_system.sh installs with KNOWCACHE_AARCH64=1 (cross
# g++, arm64 multiarch libraries, qemu-user for running it here).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
out="$root/build/aarch64"
py="${PYTHON:-$root/.venv/bin/python}"
et="$out/executorch"
if [ ! -f "$et/lib/cmake/executorch/executorch-config.cmake" ]; then
  echo "build_aarch64: fetching the aarch64 executorch==1.5.1 wheel (runtime libraries only)"
  "$py" -m pip download -q executorch==1.5.1 --platform manylinux_2_28_aarch64 \
    --python-version 3.11 --only-binary=:all: --no-deps -d "$out/wheel"
  rm -rf "$et"
  "$py" - "$out" <<'PY'
import sys, zipfile, pathlib
out = pathlib.Path(sys.argv[1])
wheel = next((out / "wheel").glob("executorch-1.5.1-*aarch64.whl"))
with zipfile.ZipFile(wheel) as z:
    z.extractall(out, [n for n in z.namelist()
                       if n.startswith(("executorch/lib/", "executorch/include/", "executorch/share/"))])
PY
fi
cd "$root"
cmake --preset aarch64-linux > /dev/null     # CMakePresets.json: build/aarch64/build
cmake --build --preset aarch64-linux -j"${JOBS:-2}"
echo "$out/build/runtime_cpp/knowcache-device"
