"""An emulated access link between the device and the cloud: a user-space TCP
relay on loopback that delays and paces bytes.

Kernel netem needs root and a qdisc these machines do not offer, so the link
is modelled in the relay, per direction, as one shared serializer followed by
a propagation delay (what a single access link does):

    start      = max(arrival, link busy until)
    busy until = start + bytes * 8 / bandwidth
    delivery   = busy until + RTT / 2 + jitter        (never before the previous chunk)

All connections share the two directions, so a background partition download
competes with queries for the downlink, as on a phone. Chunks are at most
16 KiB so a large body is delivered progressively. Jitter moves each chunk's
one-way delay uniformly within +-jitter_ms/2 (seeded), so the mean RTT stays
the configured one.

Run it as a process: ``python -m knowcache.bench.link --upstream 127.0.0.1:8000
--profile wifi`` prints ``LISTENING <port>`` once it accepts connections.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import socket
import struct
import subprocess
import sys
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Iterator, Optional

CHUNK = 16 << 10


@dataclass(frozen=True)
class LinkProfile:
    name: str
    rtt_ms: float
    bandwidth_mbps: float
    jitter_ms: float = 0.0
    # Faults, per chunk relayed (at most 16 KiB): the probability that the chunk's
    # connection is reset (a dropped link: TCP hides packet loss, not a dead path),
    # and that one of its bytes is flipped (what a broken middlebox does; a real
    # link's checksums catch almost all of it).
    loss: float = 0.0
    corrupt: float = 0.0

    def __post_init__(self) -> None:
        if self.rtt_ms < 0 or self.jitter_ms < 0:
            raise ValueError("link rtt_ms and jitter_ms must be >= 0")
        if self.bandwidth_mbps <= 0:
            raise ValueError("link bandwidth_mbps must be > 0")
        if not (0 <= self.loss <= 1 and 0 <= self.corrupt <= 1):
            raise ValueError("link loss and corrupt are probabilities in [0, 1]")

    def as_dict(self) -> dict:
        return asdict(self)

    def transfer_ms(self, nbytes: int) -> float:
        """Serialization time of ``nbytes`` on this link."""
        return nbytes * 8 / (self.bandwidth_mbps * 1e6) * 1e3


PROFILES = {
    "wifi": LinkProfile("wifi", rtt_ms=20.0, bandwidth_mbps=50.0, jitter_ms=2.0),
    "lte": LinkProfile("lte", rtt_ms=60.0, bandwidth_mbps=10.0, jitter_ms=5.0),
}


def profile(name: str, rtt_ms: Optional[float] = None, bandwidth_mbps: Optional[float] = None,
            jitter_ms: Optional[float] = None, loss: float = 0.0,
            corrupt: float = 0.0) -> LinkProfile:
    """A named profile, with any of its figures overridden and faults added."""
    if name not in PROFILES:
        raise ValueError(f"unknown link profile {name!r}; choose one of {', '.join(PROFILES)}")
    base = PROFILES[name]
    return LinkProfile(name, base.rtt_ms if rtt_ms is None else rtt_ms,
                       base.bandwidth_mbps if bandwidth_mbps is None else bandwidth_mbps,
                       base.jitter_ms if jitter_ms is None else jitter_ms, loss, corrupt)


class _Direction:
    """One direction of the link: a serializer shared by every connection."""

    def __init__(self, link: LinkProfile, rng: random.Random):
        self.link = link
        self.rng = rng
        self.busy_until = 0.0
        self.bytes = 0
        self.resets = 0
        self.flips = 0

    def damage(self, data: bytes) -> bytes:
        """The chunk as the link delivers it: ConnectionResetError for a dropped
        connection, or one byte flipped."""
        if self.link.loss and self.rng.random() < self.link.loss:
            self.resets += 1
            raise ConnectionResetError("link fault: connection dropped")
        if self.link.corrupt and self.rng.random() < self.link.corrupt:
            self.flips += 1
            i = self.rng.randrange(len(data))
            data = data[:i] + bytes([data[i] ^ (1 << self.rng.randrange(8))]) + data[i + 1:]
        return data

    def delivery_time(self, nbytes: int, now: float) -> float:
        start = max(now, self.busy_until)
        self.busy_until = start + nbytes * 8 / (self.link.bandwidth_mbps * 1e6)
        self.bytes += nbytes
        half = self.link.jitter_ms / 2
        one_way = self.link.rtt_ms / 2 + (self.rng.uniform(-half, half) if half else 0.0)
        return self.busy_until + max(0.0, one_way) / 1e3


class Relay:
    """Accepts on 127.0.0.1 and forwards each connection to ``upstream`` through the link."""

    def __init__(self, link: LinkProfile, upstream: tuple[str, int], seed: int = 0):
        self.link = link
        self.upstream = upstream
        rng = random.Random(seed)
        self.up = _Direction(link, rng)
        self.down = _Direction(link, rng)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    direction: _Direction) -> None:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()

        async def deliver() -> None:
            while True:
                due, data = await queue.get()
                delay = due - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                if data is None:
                    if writer.can_write_eof():
                        writer.write_eof()
                    return
                writer.write(data)
                await writer.drain()

        sender = asyncio.create_task(deliver())
        last = 0.0
        try:
            while True:
                data = await reader.read(CHUNK)
                now = loop.time()
                if not data:
                    queue.put_nowait((max(last, now), None))
                    break
                data = direction.damage(data)
                last = max(last, direction.delivery_time(len(data), now))
                queue.put_nowait((last, data))
            await sender
        except (ConnectionError, asyncio.CancelledError):
            sender.cancel()
            raise

    async def _handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            up_r, up_w = await asyncio.open_connection(*self.upstream)
        except OSError:
            client_w.close()  # the cloud is down: the device sees a closed connection
            return
        tasks = [asyncio.create_task(self._pipe(client_r, up_w, self.up)),
                 asyncio.create_task(self._pipe(up_r, client_w, self.down))]
        try:
            await asyncio.gather(*tasks)
        except (ConnectionError, OSError):
            for w in (up_w, client_w):       # a dropped link: both ends see a reset
                sock = w.get_extra_info("socket")
                if sock is not None:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                    struct.pack("ii", 1, 0))
        finally:
            for t in tasks:
                t.cancel()
            for w in (up_w, client_w):
                w.close()

    async def serve(self, port: int = 0, ready=None) -> None:
        server = await asyncio.start_server(self._handle, "127.0.0.1", port)
        if ready:
            ready(server.sockets[0].getsockname()[1])
        async with server:
            await server.serve_forever()


@contextmanager
def relay_process(link: LinkProfile, upstream_url: str, seed: int = 0) -> Iterator[str]:
    """Runs a relay in its own process; yields the URL the device should use."""
    host_port = upstream_url.split("://", 1)[-1].rstrip("/")
    cmd = [sys.executable, "-m", "knowcache.bench.link", "--upstream", host_port,
           "--rtt-ms", str(link.rtt_ms), "--bandwidth-mbps", str(link.bandwidth_mbps),
           "--jitter-ms", str(link.jitter_ms), "--loss", str(link.loss),
           "--corrupt", str(link.corrupt), "--seed", str(seed)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        if not line.startswith("LISTENING "):
            proc.kill()
            raise RuntimeError(f"link relay did not start: {proc.stderr.read()[-2000:]}")
        yield f"http://127.0.0.1:{int(line.split()[1])}"
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()


def main(argv: Optional[list[str]] = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--upstream", required=True, help="host:port of the cloud")
    p.add_argument("--port", type=int, default=0, help="port to listen on (0: any free one)")
    p.add_argument("--profile", choices=sorted(PROFILES), default="wifi")
    p.add_argument("--rtt-ms", type=float)
    p.add_argument("--bandwidth-mbps", type=float)
    p.add_argument("--jitter-ms", type=float)
    p.add_argument("--loss", type=float, default=0.0,
                   help="probability a chunk's connection is reset")
    p.add_argument("--corrupt", type=float, default=0.0,
                   help="probability a chunk gets one byte flipped")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    host, _, port = a.upstream.rpartition(":")
    if not host or not port.isdigit():
        p.error(f"--upstream must look like 127.0.0.1:8000, not {a.upstream!r}")
    try:
        link = profile(a.profile, a.rtt_ms, a.bandwidth_mbps, a.jitter_ms, a.loss, a.corrupt)
    except ValueError as e:
        p.error(str(e))
    relay = Relay(link, (host, int(port)), a.seed)

    def ready(bound: int) -> None:
        print(f"LISTENING {bound}", flush=True)
    try:
        asyncio.run(relay.serve(a.port, ready))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
