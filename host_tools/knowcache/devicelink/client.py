"""A knowcache-device on a serial line: requests with timeouts and retries,
resumable uploads, and what `knowcache flash` / `knowcache device` do."""

from __future__ import annotations

import json
import struct
import time
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from knowcache import manifest
from knowcache.devicelink.frames import RESPONSE, Decoder, Frame, Msg, encode

CHUNK = 16 * 1024


class DeviceError(RuntimeError):
    """The device answered with an error, or did not answer."""

    def __init__(self, message: str, code: str = "unavailable"):
        super().__init__(message)
        self.code = code


class DeviceClient:
    """Talks to `knowcache-device serve-serial` through pyserial."""

    def __init__(self, port: str, *, baud: int = 115200, timeout_s: float = 2.0,
                 retries: int = 4, serial_port=None):
        import serial
        try:
            self.port = serial_port or serial.Serial(port, baudrate=baud, timeout=0.05,
                                                     write_timeout=timeout_s)
        except serial.SerialException as e:
            raise DeviceError(f"cannot open {port}: {e}") from e
        self.timeout_s = timeout_s
        self.retries = retries
        self.decoder = Decoder()
        self.seq = 0
        self.retried = 0

    def close(self) -> None:
        self.port.close()

    def __enter__(self) -> "DeviceClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def request(self, msg: Msg, payload: bytes = b"") -> bytes:
        """Sends one request and returns the response payload; retries on silence."""
        import serial
        self.seq = (self.seq + 1) & 0xFFFF
        wire = encode(Frame(int(msg), self.seq, payload))
        for attempt in range(self.retries + 1):
            if attempt:
                self.retried += 1
            try:
                self.port.write(wire)
            except serial.SerialTimeoutException:
                continue                   # the line is stuck: counts as no answer
            deadline = time.monotonic() + self.timeout_s
            while time.monotonic() < deadline:
                data = self.port.read(65536)
                for f in self.decoder.feed(data) if data else []:
                    if f.seq != self.seq:
                        continue           # a late answer to an earlier attempt
                    if f.type == Msg.ERROR | RESPONSE:
                        err = json.loads(f.payload or b"{}")
                        raise DeviceError(err.get("message", "device error"),
                                          err.get("code", "internal"))
                    if f.type != msg | RESPONSE:
                        raise DeviceError(f"device answered type {f.type:#x} to {msg.name}",
                                          "protocol")
                    return f.payload
        raise DeviceError(f"no answer to {msg.name} after {self.retries + 1} tries of "
                          f"{self.timeout_s:g} s; is knowcache-device serve-serial running on "
                          "the other end, at the same baud rate?")

    def call(self, msg: Msg, body: Optional[dict] = None) -> dict:
        return json.loads(self.request(msg, json.dumps(body).encode() if body is not None else b""))

    def hello(self) -> dict:
        return self.call(Msg.HELLO)

    def list(self) -> dict:
        return self.call(Msg.LIST)

    def stats(self) -> dict:
        return self.call(Msg.STATS)

    def delete(self, pid: str) -> dict:
        return self.call(Msg.DELETE, {"id": pid})

    def put(self, task: str, labels: list[str], entry: dict, data: bytes,
            progress: Optional[Callable[[int, int], None]] = None,
            signed: Optional[tuple[str, str]] = None) -> int:
        """Uploads one partition, resuming at what the device already holds; returns the
        bytes sent. The device installs it only once size and sha256 check out.
        ``signed`` is (manifest text, manifest.sig line): a device that trusts signing
        keys installs only partitions a signed manifest pins."""
        begin = {"task": task, "labels": labels, "entry": {**entry, "file": f"{entry['id']}.pte"}}
        if signed is not None:
            begin["manifest"], begin["signature"] = signed
        offset = self.call(Msg.PUT_BEGIN, begin)["offset"]
        sent = resyncs = 0
        while offset < len(data):
            chunk = data[offset: offset + CHUNK]
            try:
                reply = self.request(Msg.PUT_CHUNK, struct.pack("<Q", offset) + chunk)
            except DeviceError as e:
                # the device lost our upload (it restarted): ask where to resume
                if e.code not in ("invalid_argument", "failed_precondition") or resyncs >= 3:
                    raise
                resyncs += 1
                offset = self.call(Msg.PUT_BEGIN, begin)["offset"]
                continue
            offset = json.loads(reply)["offset"]
            sent += len(chunk)
            if progress:
                progress(offset, len(data))
        self.call(Msg.PUT_COMMIT)
        return sent

    def infer(self, x: np.ndarray) -> dict:
        x = np.ascontiguousarray(x, dtype="<f4")
        header = json.dumps({"shape": list(x.shape)}).encode()
        return json.loads(self.request(Msg.INFER, struct.pack("<I", len(header)) + header
                                       + x.tobytes()))


def flash(client: DeviceClient, models: Path, partitions: Optional[list[str]] = None,
          progress: Optional[Callable[[str, int, int], None]] = None,
          log: Callable[[str], None] = print) -> dict:
    """Uploads the partitions of ``models/manifest.json`` the device lacks (by sha256)."""
    current = manifest.load(models)
    entries = {p["id"]: p for p in current.entries()}
    wanted = partitions or [p["id"] for p in current.entries() if p["role"] != manifest.Role.FULL]
    unknown = [p for p in wanted if p not in entries]
    if unknown:
        raise ValueError(f"{current.path} has no partitions {unknown}; it has "
                         f"{', '.join(entries)}")
    have = {p["id"]: p["sha256"] for p in client.list()["partitions"]}
    sent, skipped = [], []
    for pid in wanted:
        entry = entries[pid]
        if have.get(pid) == entry["sha256"]:
            skipped.append(pid)
            continue
        data = current.file_of(entry).read_bytes()
        client.put(current.task, current.labels, entry, data,
                   (lambda done, total, pid=pid: progress(pid, done, total)) if progress else None,
                   signed=(current.text, current.signature) if current.signature else None)
        sent.append(pid)
        log(f"{pid}: {len(data)} bytes flashed and verified")
    return {"flashed": sent, "up_to_date": skipped, "retries": client.retried,
            "device": client.list()}
