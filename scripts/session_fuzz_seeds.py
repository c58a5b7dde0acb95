"""Writes the seed corpus of build/fuzz/session_fuzzer
(runtime_cpp/device/fuzz/corpus_session): valid request sequences of every
kind against the fuzzer's store (the shipped vision cached program), in its
input format: per request  type:u8 | length:u32 LE | payload.

    .venv/bin/python scripts/session_fuzz_seeds.py
"""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "runtime_cpp/device/fuzz/corpus_session"
HELLO, LIST, PUT_BEGIN, PUT_CHUNK, PUT_COMMIT, DELETE, INFER, STATS = range(1, 9)


def request(kind: int, payload: bytes = b"") -> bytes:
    return struct.pack("<BI", kind, len(payload)) + payload


def as_json(obj) -> bytes:
    return json.dumps(obj).encode()


def infer(shape, x: np.ndarray) -> bytes:
    header = as_json({"shape": shape})
    return request(INFER, struct.pack("<I", len(header)) + header + x.astype("<f4").tobytes())


def chunk(offset: int, data: bytes) -> bytes:
    return request(PUT_CHUNK, struct.pack("<Q", offset) + data)


def main() -> None:
    manifest = json.loads((REPO / "models/vision/manifest.json").read_text())
    cached = next(p for p in manifest["partitions"] if p["id"] == "cached")
    image = (np.arange(28 * 28) % 17 / 16.0).reshape(1, 1, 28, 28)
    tiny = bytes(range(16))      # a program the store accepts and the engine cannot load
    tiny_entry = dict(cached, id="tiny", file="tiny.pte", bytes=len(tiny),
                      sha256=hashlib.sha256(tiny).hexdigest())
    begin_tiny = as_json({"task": manifest["task"], "labels": manifest["labels"],
                          "entry": tiny_entry})
    seeds = {
        "hello": request(HELLO),
        "list": request(LIST),
        "stats": request(STATS),
        "infer": infer([1, 1, 28, 28], image),
        "infer_then_stats": infer([1, 1, 28, 28], image) + request(STATS),
        "flash_tiny": (request(PUT_BEGIN, begin_tiny) + chunk(0, tiny[:7]) + chunk(7, tiny[7:])
                       + request(PUT_COMMIT) + request(LIST)),
        "flash_tiny_then_infer": (request(PUT_BEGIN, begin_tiny) + chunk(0, tiny)
                                  + request(PUT_COMMIT) + request(DELETE, as_json({"id": "cached"}))
                                  + infer([1, 1, 28, 28], image)),
        "resume_cached": request(PUT_BEGIN, as_json({"task": manifest["task"],
                                                     "labels": manifest["labels"],
                                                     "entry": cached})) + request(PUT_COMMIT),
        "delete_then_infer": (request(DELETE, as_json({"id": "cached"}))
                              + infer([1, 1, 28, 28], image)),
    }
    OUT.mkdir(parents=True, exist_ok=True)
    for name, data in seeds.items():
        (OUT / name).write_bytes(data)
    print(f"wrote {len(seeds)} seeds to {OUT.relative_to(REPO)}")


if __name__ == "__main__":
    main()
