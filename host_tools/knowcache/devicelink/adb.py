"""A phone over adb: the self-contained aarch64 bundle (`make android-bundle`) and a
task's programs in /data/local/tmp/knowcache, and knowcache-device run from
`adb shell` (what `knowcache flash --adb` and `knowcache device --adb` do).

On the phone:
    /data/local/tmp/knowcache/run.sh, knowcache-device, lib/   the bundle
    /data/local/tmp/knowcache/models/<task>/manifest.json, *.pte
    /data/local/tmp/knowcache/inputs/                          files to classify
"""

from __future__ import annotations

import hashlib
import json
import shlex
import subprocess
from pathlib import Path, PurePosixPath
from typing import Callable, Optional

from knowcache import manifest

ROOT = PurePosixPath("/data/local/tmp/knowcache")
APP_PACKAGE = "org.knowcache.demo"   # android_app/app/build.gradle's applicationId


class AdbError(RuntimeError):
    """adb failed, or the phone's program did."""


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class Adb:
    """Runs `adb [-s SERIAL] ...`; every failure is an AdbError with adb's words."""

    def __init__(self, serial: Optional[str] = None, adb: str = "adb"):
        self.prefix = [adb] + (["-s", serial] if serial else [])

    def run(self, *args: str, timeout_s: float = 600) -> str:
        try:
            res = subprocess.run(self.prefix + list(args), capture_output=True, text=True,
                                 errors="replace", timeout=timeout_s)
        except FileNotFoundError as e:
            raise AdbError("adb is not installed: `apt-get install adb` (Debian) or Android's "
                           "platform-tools") from e
        except subprocess.TimeoutExpired as e:
            raise AdbError(f"adb {' '.join(args[:2])} took over {timeout_s:g} s") from e
        if res.returncode != 0:
            raise AdbError(f"adb {' '.join(args[:2])} failed: "
                           f"{(res.stderr or res.stdout).strip()[-1500:]}")
        return res.stdout

    def shell(self, command: str, timeout_s: float = 600) -> str:
        """Runs ``command`` with the phone's /system/bin/sh; fails on a non-zero status."""
        # adb shell returns the remote status only on newer adbd: check it ourselves.
        out = self.run("shell", f"{command}; echo knowcache-status=$?", timeout_s=timeout_s)
        body, _, status = out.rstrip().rpartition("knowcache-status=")
        if status.strip() != "0":
            raise AdbError(f"on the phone, `{command}` failed (status {status.strip()}): "
                           f"{body.strip()[-1500:]}")
        return body

    def push(self, local: Path, remote: PurePosixPath) -> None:
        self.run("push", str(local), str(remote))

    def hashes(self, folder: PurePosixPath) -> dict[str, str]:
        """sha256 of every file under ``folder`` on the phone, by relative path."""
        out = self.shell(f"mkdir -p {folder} && cd {folder} && "
                         "find . -type f -exec sha256sum {} +")
        hashes = {}
        for line in out.splitlines():
            digest, _, name = line.strip().partition(" ")
            if name:
                hashes[name.strip().lstrip("*").removeprefix("./")] = digest
        return hashes


def planned_files(bundle: Optional[Path], task_dir: Path,
                  partitions: Optional[list[str]] = None) -> dict[str, Path]:
    """Phone path (relative to ROOT) -> local file: the bundle (unless None) and the
    task's programs (every partition but the full model unless ``partitions`` names them)."""
    files = {}
    if bundle is not None:
        if not (bundle / "run.sh").is_file():
            raise FileNotFoundError(f"{bundle} is not an android bundle: run `make android-bundle`")
        files = {f.relative_to(bundle).as_posix(): f for f in sorted(bundle.rglob("*"))
                 if f.is_file()}
    current = manifest.load(task_dir)
    entries = {p["id"]: p for p in current.entries()}
    wanted = partitions or [p["id"] for p in current.entries() if p["role"] != manifest.Role.FULL]
    unknown = [p for p in wanted if p not in entries]
    if unknown:
        raise ValueError(f"{current.path} has no partitions {unknown}; it has {', '.join(entries)}")
    models = f"models/{current.task}"
    files[f"{models}/manifest.json"] = current.path
    for pid in wanted:
        files[f"{models}/{entries[pid]['file']}"] = current.file_of(entries[pid])
    return files


def flash(adb: Adb, bundle: Optional[Path], task_dir: Path,
          partitions: Optional[list[str]] = None,
          progress: Optional[Callable[[str, int, int], None]] = None) -> dict:
    """Pushes what differs from the phone by sha256 (the bundle unless None, and the
    task's programs); returns what was pushed."""
    files = planned_files(bundle, task_dir, partitions)
    want = {rel: sha256_file(f) for rel, f in files.items()}
    have = adb.hashes(ROOT)
    todo = [(rel, f) for rel, f in files.items() if have.get(rel) != want[rel]]
    total = sum(f.stat().st_size for _, f in todo)
    done = 0
    if progress:
        progress("push", 0, total)
    for rel, f in todo:
        remote = ROOT / rel
        adb.shell(f"mkdir -p {remote.parent}")
        adb.push(f, remote)
        done += f.stat().st_size
        if progress:
            progress("push", done, total)
    if bundle is not None:
        adb.shell(f"chmod 755 {ROOT}/run.sh {ROOT}/knowcache-device {ROOT}/lib/*")
    after = adb.hashes(ROOT)
    bad = [rel for rel in files if after.get(rel) != want[rel]]
    if bad:
        raise AdbError(f"after pushing, {', '.join(bad)} differ on the phone (storage full?)")
    return {"pushed": [rel for rel, _ in todo], "up_to_date": len(files) - len(todo),
            "bytes": total}


def install_app(adb: Adb, apk: Path, task_dir: Path, partitions: Optional[list[str]] = None,
                progress: Optional[Callable[[str, int, int], None]] = None) -> dict:
    """Installs the demo app (an APK the user built: android_app/README.md) and copies
    the task's programs into its files/models/<task>, where the app reads them. The
    copy goes through `run-as`, which a debuggable (debug) build allows."""
    adb.run("install", "-r", str(apk))
    result = flash(adb, None, task_dir, partitions, progress)
    task = manifest.load(task_dir).task
    adb.shell(f"run-as {APP_PACKAGE} sh -c 'mkdir -p files/models/{task} && "
              f"cp {ROOT}/models/{task}/* files/models/{task}/'")
    return result


def tasks_on_phone(adb: Adb) -> list[str]:
    out = adb.shell(f"ls {ROOT}/models 2>/dev/null || true")
    return sorted(t for t in out.split() if t)


def run(adb: Adb, inputs: list[Path], task: Optional[str] = None, cloud: Optional[str] = None,
        extra: tuple[str, ...] = ()) -> list[dict]:
    """Pushes ``inputs`` and classifies them with knowcache-device on the phone; one
    dict per input (knowcache-device's JSON lines)."""
    tasks = tasks_on_phone(adb)
    if task is None:
        if len(tasks) != 1:
            raise AdbError(f"the phone holds tasks {tasks or 'none'}: pass --task (after "
                           "`knowcache flash --adb --task T`)")
        task = tasks[0]
    elif task not in tasks:
        raise AdbError(f"the phone has no models/{task}: `knowcache flash --adb --task {task}`")
    names = []
    for i, f in enumerate(inputs):
        name = f"inputs/{i}-{f.name}"
        adb.shell(f"mkdir -p {ROOT}/inputs")
        adb.push(f, ROOT / name)
        names.append(name)
    args = ["run", "--models", f"models/{task}", *extra]
    if cloud:
        args += ["--cloud", cloud]
    out = adb.shell(f"cd {ROOT} && sh run.sh {' '.join(map(shlex.quote, args + names))}")
    results = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    for r, f in zip(results, inputs):
        r["input"] = str(f)
    return results


def reverse(adb: Adb, url: str) -> str:
    """Makes the host's ``url`` (a loopback http URL) reachable from the phone through
    `adb reverse`; returns the URL the phone uses. Android has no /etc/resolv.conf for
    glibc, so the phone side is always a literal 127.0.0.1."""
    from urllib.parse import urlparse
    u = urlparse(url)
    if u.scheme != "http" or u.hostname not in ("127.0.0.1", "localhost") or not u.port:
        raise ValueError(f"--cloud {url}: give the host's loopback URL with a port "
                         "(http://127.0.0.1:8000); adb reverse forwards it to the phone")
    adb.run("reverse", f"tcp:{u.port}", f"tcp:{u.port}")
    return f"http://127.0.0.1:{u.port}"


def hello(adb: Adb) -> dict:
    """Starts the bundle's program on the phone (its usage text) and names the phone."""
    usage = adb.shell(f"cd {ROOT} && sh run.sh --help")
    model = adb.shell("getprop ro.product.model 2>/dev/null || true").strip()
    return {"program": "knowcache-device", "root": str(ROOT), "model": model,
            "usage": usage.strip().splitlines()[0] if usage.strip() else ""}


def listing(adb: Adb) -> dict:
    """The tasks on the phone, each partition with whether its sha256 matches the manifest."""
    have = adb.hashes(ROOT)
    out = {}
    for task in tasks_on_phone(adb):
        doc = json.loads(adb.shell(f"cat {ROOT}/models/{task}/manifest.json"))
        out[task] = {"version": doc.get("version"), "partitions": [
            {"id": p["id"], "bytes": p["bytes"],
             "present": f"models/{task}/{p['file']}" in have,
             "verified": have.get(f"models/{task}/{p['file']}") == p["sha256"]}
            for p in doc["partitions"]]}
    return {"tasks": out}


def stats(adb: Adb) -> dict:
    """Bytes on the phone: the bundle, each task's models, inputs."""
    out = adb.shell(f"cd {ROOT} && find . -type f -exec stat -c '%s %n' {{}} +")
    sizes: dict[str, int] = {}
    for line in out.splitlines():
        size, _, name = line.strip().partition(" ")
        parts = name.removeprefix("./").split("/")
        key = "/".join(parts[:2]) if parts[0] == "models" else (
            parts[0] if parts[0] == "inputs" else "bundle")
        sizes[key] = sizes.get(key, 0) + int(size)
    return {"bytes": sizes, "total_bytes": sum(sizes.values())}
