"""Manifests: the one place ``manifest.json`` is read, written and updated.

A manifest lists a task's programs (partitions) with their role, labels, input
spec, gate threshold, size and sha256; its schema is the C++ runtime's
(runtime_cpp/include/knowcache/manifest.h). Everything read here goes through
that parser and everything written is parsed back by it before it is saved,
so the host never accepts or writes a manifest the device would refuse.
Writes are atomic.

    from knowcache import manifest
    m = manifest.load("models/kws")          # ManifestFile
    m.first(manifest.Role.FULL)["file"], m.parsed.labels, m.flops()
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Optional, Sequence

from knowcache import signing, tta
from knowcache.atomic import replace_atomically
from knowcache.runtime import Manifest, PartitionInfo, sha256_hex

FILE_NAME = "manifest.json"
SCHEMA_VERSION = 1
_SCHEMA_FIELDS = ("schema_version", "task", "version", "labels", "private_labels", "partitions")


class Role(str, Enum):
    """What a program is for (C++ ``PartitionRole``); compares equal to its JSON string."""

    FULL = "full"            # the whole model: what the cloud runs
    CACHED = "cached"        # knowledge caching: the student for the popular classes + other
    PARTITION = "partition"  # CacheNet: the student for one group of classes + other
    GENERIC = "generic"      # a student over every class, the size of the cached one
    STAGED = "staged"        # layer caching: the full model in stages with exit heads

    def __str__(self) -> str:
        return self.value


ROLES = tuple(r.value for r in Role)
# The input fields a task's programs share beyond dtype and shape.
INPUT_EXTRA_FIELDS = ("sample_rate", "image_size", "value_range")


def path_of(directory: str | os.PathLike) -> Path:
    return Path(directory) / FILE_NAME


def exists(directory: str | os.PathLike) -> bool:
    """Whether ``directory`` holds a manifest (a task's models folder)."""
    return path_of(directory).is_file()


@dataclass(frozen=True)
class ManifestFile:
    """A task's manifest as read from its folder: the runtime's parsed
    ``Manifest`` (validated) and the JSON document, for the fields the runtime
    does not read (a program's ``flops``, the cloud's ``selector``, build extras)."""

    directory: Path
    text: str
    doc: dict
    parsed: Manifest
    signature: Optional[str] = None   # manifest.sig's line (knowcache.signing), None if unsigned

    @property
    def path(self) -> Path:
        return path_of(self.directory)

    @property
    def task(self) -> str:
        return self.doc["task"]

    @property
    def labels(self) -> list[str]:
        return list(self.doc.get("labels", []))

    @property
    def private_labels(self) -> list[str]:
        """Task labels whose inputs never leave the device (privacy routing)."""
        return list(self.doc.get("private_labels", []))

    @property
    def version(self) -> int:
        return int(self.doc.get("version", 1))

    @property
    def selector(self) -> Optional[dict]:
        """The cloud's partition selector ({"kind", "partitions": [ids]}), if any."""
        return self.doc.get("selector")

    @property
    def cloud_tta(self) -> str:
        """The test-time views the cloud averages for its full model's answers
        (knowcache/tta.py): "none" unless the manifest says otherwise."""
        return tta.check(self.doc.get("cloud_tta", "none"), f"{self.path}: cloud_tta")

    @property
    def extra(self) -> dict:
        """Top-level fields beyond the schema's (kept when the manifest is updated)."""
        return {k: v for k, v in self.doc.items() if k not in _SCHEMA_FIELDS}

    def entries(self, role: Optional[Role] = None) -> list[dict]:
        """Partition entries (JSON), in manifest order; only ``role``'s when given."""
        return [p for p in self.doc["partitions"] if role is None or p["role"] == role]

    def entry(self, pid: str) -> Optional[dict]:
        return next((p for p in self.doc["partitions"] if p["id"] == pid), None)

    def first(self, role: Role) -> Optional[dict]:
        return next(iter(self.entries(role)), None)

    def require(self, role: Role, why: str = "") -> dict:
        """The first entry with ``role``; FileNotFoundError saying what to build otherwise."""
        found = self.first(role)
        if found is None:
            hint = ("write one with `knowcache export --staged`" if role == Role.STAGED
                    else "rebuild the models with `knowcache build-models`")
            raise FileNotFoundError(f"{self.path} has no '{role}' program{why}; {hint}")
        return found

    def file_of(self, entry: dict) -> Path:
        return self.directory / entry["file"]

    def input_extra(self) -> dict:
        """The task's input fields beyond dtype and shape (sample_rate or image_size),
        as the full model's entry states them."""
        full = self.require(Role.FULL)
        return {k: v for k, v in full["input"].items() if k in INPUT_EXTRA_FIELDS}

    def flops(self) -> dict[str, int]:
        """Per-query FLOPs of each program (its "flops" field; a staged program counts
        its whole path). Programs without the field are left out."""
        out = {}
        for p in self.doc["partitions"]:
            if "staged" in p:
                out[p["id"]] = int(p["staged"]["total_flops"])
            elif "flops" in p:
                out[p["id"]] = int(p["flops"])
        return out


def load(directory: str | os.PathLike) -> ManifestFile:
    """Reads and validates ``directory/manifest.json`` (InvalidInputError naming a bad
    field, NotFoundError when it is missing)."""
    directory = Path(directory)
    parsed = Manifest.load(str(path_of(directory)))
    text = path_of(directory).read_text()
    return ManifestFile(directory, text, json.loads(text), parsed,
                        signing.read_signature(directory))


def from_text(directory: str | os.PathLike, text: str, signature: Optional[str] = None
              ) -> ManifestFile:
    """A manifest already read (and served) elsewhere, validated again here;
    ``directory`` only names it in messages."""
    return ManifestFile(Path(directory), text, json.loads(text), Manifest.parse(text), signature)


def partition_entry(pid: str, pte: bytes, *, role: Role | str, labels: Sequence[str], file: str,
                    input_shape: Sequence[int], dtype: str = "float32",
                    threshold: float = 0.5, other_label: Optional[str] = None,
                    sample_rate: Optional[int] = None,
                    image_size: Optional[Sequence[int]] = None,
                    value_range: Optional[Sequence[float]] = None, version: int = 1,
                    **extra) -> dict:
    """One manifest entry for a program's bytes (size and sha256 computed here)."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}, got {role!r}")
    spec: dict = {"dtype": dtype, "shape": [int(d) for d in input_shape]}
    if sample_rate:
        spec["sample_rate"] = int(sample_rate)
    if image_size:
        spec["image_size"] = [int(d) for d in image_size]
    if value_range is not None:
        spec["value_range"] = [float(v) for v in value_range]
    entry = {
        "id": pid, "version": int(version), "role": str(Role(role)), "file": file,
        "labels": list(labels), "input": spec, "threshold": float(threshold),
        "bytes": len(pte), "sha256": sha256_hex(pte),
    }
    if other_label is not None:
        entry["other_label"] = other_label
    entry.update(extra)
    return entry


def info_of(entry: dict) -> PartitionInfo:
    """The runtime's PartitionInfo for one entry (checked by the C++ parser), for a
    program that is not in a manifest yet."""
    return PartitionInfo.parse(json.dumps(entry))


def check_private_labels(private_labels: Sequence[str], partitions: Sequence[dict]) -> None:
    """ValueError naming ``private_labels`` when a private class is held by no device
    program: the device could then never tell whether an input is private, and would
    keep back every query its gate rejects."""
    device = [p for p in partitions if p["role"] != Role.FULL]
    for label in private_labels:
        if device and not any(label in p["labels"] for p in device):
            raise ValueError(f"private_labels: '{label}' is held by no device program "
                             f"({', '.join(p['id'] for p in device)}); build the cached model "
                             "with it (`--private`)")


def write(directory: str | os.PathLike, task: str, labels: Sequence[str],
          partitions: Sequence[dict], *, version: int = 1,
          private_labels: Sequence[str] = (),
          signing_key: Optional[str | os.PathLike] = None, **extra) -> Path:
    """Validates and writes ``directory/manifest.json``; returns its path.
    ``private_labels`` (task labels) are written when given; each must be held by a
    device program (see ``check_private_labels``). With ``signing_key`` (an Ed25519
    private key file) it is signed (``manifest.sig``); without, a ``manifest.sig``
    left from an earlier version is removed, as it no longer matches."""
    doc = {"schema_version": SCHEMA_VERSION, "task": task, "version": int(version),
           "labels": list(labels), "partitions": list(partitions)}
    if private_labels:
        doc["private_labels"] = list(private_labels)
    doc.update(extra)
    text = json.dumps(doc, indent=2) + "\n"
    Manifest.parse(text)  # raises InvalidInputError naming the bad field
    check_private_labels(private_labels, partitions)
    key = signing.load_private(signing_key) if signing_key is not None else None
    path = path_of(directory)
    replace_atomically(path, lambda tmp: tmp.write_bytes(text.encode()))
    if key is not None:
        signing.sign_manifest(directory, key)
    else:
        signing.remove_signature(directory)
    return path


def update(directory: str | os.PathLike, entry: dict, *, bump: bool = True,
           signing_key: Optional[str | os.PathLike] = None) -> int:
    """Replaces the entry with ``entry``'s id where it stands (or adds it last),
    keeping every other field; bumps the manifest version unless told not to; signs
    it with ``signing_key`` when given (see ``write``); returns that version."""
    current = load(directory)
    parts = [entry if p["id"] == entry["id"] else p for p in current.entries()]
    if not any(p["id"] == entry["id"] for p in parts):
        parts.append(entry)
    version = current.version + 1 if bump else current.version
    write(directory, current.task, current.labels, parts, version=version,
          private_labels=current.private_labels, signing_key=signing_key, **current.extra)
    return version
