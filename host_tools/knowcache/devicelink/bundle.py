"""`make android-bundle`: knowcache-device for aarch64 as one self-contained folder.

The folder holds the cross-built program, the cross toolchain's dynamic loader
(ld-linux-aarch64.so.1) and every library the program needs, found by following
ELF DT_NEEDED entries (glibc, libstdc++, OpenSSL, zlib, brotli, the aarch64
wheel's ExecuTorch libraries), plus ``run.sh``, which starts the program
through that loader. Nothing is taken from the phone: an Android phone (bionic,
no glibc) runs it from ``adb shell`` as it runs on any aarch64 Linux kernel.

    python -m knowcache.devicelink.bundle --program build/aarch64/build/runtime_cpp/knowcache-device \
        --out build/android-bundle
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
LOADER = "ld-linux-aarch64.so.1"
READELF = "aarch64-linux-gnu-readelf"
# Where the libraries come from, first match wins: the aarch64 executorch wheel,
# the cross toolchain's glibc and libstdc++, Debian's arm64 multiarch packages.
SEARCH = (REPO / "build/aarch64/executorch/lib", Path("/usr/aarch64-linux-gnu/lib"),
          Path("/usr/lib/aarch64-linux-gnu"), Path("/lib/aarch64-linux-gnu"))

RUN_SH = """#!/system/bin/sh
# knowcache-device with its own loader and libraries (nothing from the phone).
# KNOWCACHE_EMULATOR is unset on a phone; tests on x86-64 set it to qemu-aarch64.
here=$(cd "$(dirname "$0")" && pwd)
exec $KNOWCACHE_EMULATOR "$here/lib/%s" --library-path "$here/lib" "$here/knowcache-device" "$@"
""" % LOADER


def needed(path: Path) -> list[str]:
    """The DT_NEEDED names of an aarch64 ELF file."""
    out = subprocess.run([READELF, "-d", str(path)], capture_output=True, text=True, check=True)
    return [line.split("[", 1)[1].split("]", 1)[0] for line in out.stdout.splitlines()
            if "(NEEDED)" in line]


def find_library(name: str, search=SEARCH) -> Path:
    for folder in search:
        if (folder / name).exists():
            return (folder / name).resolve()
    raise FileNotFoundError(f"{name} is not in {', '.join(map(str, search))}: run "
                            "`make build-aarch64` (and scripts/setup_system.sh for the arm64 "
                            "libraries)")


def closure(program: Path, search=SEARCH) -> dict[str, Path]:
    """Every library ``program`` loads, by soname, followed transitively."""
    found: dict[str, Path] = {}
    todo = needed(program)
    while todo:
        name = todo.pop()
        if name in found or name == LOADER:
            continue
        found[name] = find_library(name, search)
        todo += needed(found[name])
    return found


def make_bundle(program: Path, out: Path, search=SEARCH) -> Path:
    """Writes the folder (replacing ``out``); returns ``out``."""
    if not program.is_file():
        raise FileNotFoundError(f"{program} does not exist: run `make build-aarch64` first")
    libs = closure(program, search)
    if out.exists():
        shutil.rmtree(out)
    (out / "lib").mkdir(parents=True)
    shutil.copy2(program, out / "knowcache-device")
    shutil.copy2(find_library(LOADER, search), out / "lib" / LOADER)
    for name, path in sorted(libs.items()):
        shutil.copy2(path, out / "lib" / name)
    (out / "run.sh").write_text(RUN_SH)
    for f in (out / "run.sh", out / "knowcache-device", out / "lib" / LOADER):
        f.chmod(0o755)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--program", type=Path,
                   default=REPO / "build/aarch64/build/runtime_cpp/knowcache-device")
    p.add_argument("--out", type=Path, default=REPO / "build/android-bundle")
    a = p.parse_args()
    out = make_bundle(a.program, a.out)
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    print(f"{out}: {len(list((out / 'lib').iterdir()))} libraries, {size / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
