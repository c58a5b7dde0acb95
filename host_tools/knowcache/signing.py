"""Signed manifests: Ed25519 keys, and the detached signature next to a manifest.

A manifest pins every program's size and sha256, so signing the manifest signs
the programs. The signature is *detached* and covers the exact bytes of
``manifest.json`` (no JSON canonicalization: the C++ verifier and this module
agree byte for byte). It lives in ``manifest.sig`` beside the manifest, one line
of JSON::

    {"alg": "ed25519", "key_id": "<16 hex>", "signature": "<base64, 64 bytes>"}

and the server sends that line with the manifest (header ``X-Knowcache-Signature``,
and ``GET /v1/{task}/manifest.sig``). The C++ runtime (``signature.h``) verifies
it against the trusted public keys it is given; docs/security.md has the threat
model.

Key files (``knowcache keys generate --out DIR``):

- ``DIR/<name>.key``: the private key, PKCS#8 PEM, mode 0600.
- ``DIR/<name>.pub``: the public key as one line of base64 (the 32 raw bytes),
  which is what the runtimes take as a trusted key (``trusted_keys=[...]``,
  ``knowcache-device --trusted-key FILE``, ``EngineConfig.trustedKeys``).

A key's id is the first 16 hex digits of the sha256 of its 32 raw public bytes.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (Ed25519PrivateKey,
                                                               Ed25519PublicKey)

from knowcache.atomic import replace_atomically

ALG = "ed25519"
SIG_FILE = "manifest.sig"
HEADER = "X-Knowcache-Signature"
KEY_SUFFIX = ".key"
PUB_SUFFIX = ".pub"


class SignatureError(ValueError):
    """A signature that is missing, malformed, by an unknown key, or does not verify."""


def key_id(public_raw: bytes) -> str:
    """First 16 hex digits of the sha256 of a key's 32 raw public bytes."""
    return hashlib.sha256(public_raw).hexdigest()[:16]


def _raw(public: Ed25519PublicKey) -> bytes:
    return public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


@dataclass(frozen=True)
class KeyFiles:
    """What ``generate`` wrote."""

    private: Path
    public: Path
    key_id: str


def generate(out: str | os.PathLike, name: str = "signing") -> KeyFiles:
    """A new Ed25519 key pair in ``out`` (``<name>.key`` mode 0600, ``<name>.pub``).
    Refuses to overwrite an existing private key."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    private_path, public_path = out / (name + KEY_SUFFIX), out / (name + PUB_SUFFIX)
    if private_path.exists():
        raise FileExistsError(f"{private_path} exists; remove it or pick another --name "
                              "(a key is never overwritten)")
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    # Created 0600 from the start: the key is never readable by others, even briefly.
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    raw = _raw(key.public_key())
    public_path.write_text(base64.b64encode(raw).decode() + "\n")
    return KeyFiles(private_path, public_path, key_id(raw))


def load_private(path: str | os.PathLike) -> Ed25519PrivateKey:
    """An Ed25519 private key from a PEM file (ValueError saying what is wrong)."""
    path = Path(path)
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (ValueError, TypeError) as e:
        raise ValueError(f"{path} is not an unencrypted PEM private key: {e}") from e
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{path} is not an Ed25519 key (knowcache signs with Ed25519)")
    return key


def parse_public(text: str) -> bytes:
    """The 32 raw bytes of a public key given as base64 (a ``.pub`` file's line)."""
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except ValueError as e:
        raise ValueError(f"a public key must be base64 of 32 bytes: {e}") from e
    if len(raw) != 32:
        raise ValueError(f"a public key must be base64 of 32 bytes, got {len(raw)} bytes")
    return raw


def load_public(path: str | os.PathLike) -> bytes:
    """The raw public key in a ``.pub`` file."""
    return parse_public(Path(path).read_text())


def public_of(private_path: str | os.PathLike) -> str:
    """The base64 public key of a private key file (what a device trusts)."""
    return base64.b64encode(_raw(load_private(private_path).public_key())).decode()


def sign_bytes(data: bytes, key: Ed25519PrivateKey) -> str:
    """The ``manifest.sig`` line (JSON, no newline) for ``data``."""
    sig = {"alg": ALG, "key_id": key_id(_raw(key.public_key())),
           "signature": base64.b64encode(key.sign(data)).decode()}
    return json.dumps(sig, separators=(", ", ": "))


def sign_manifest(directory: str | os.PathLike,
                  private_key: str | os.PathLike | Ed25519PrivateKey) -> Path:
    """Signs ``directory/manifest.json`` as it is on disk; writes ``manifest.sig``."""
    directory = Path(directory)
    key = (private_key if isinstance(private_key, Ed25519PrivateKey)
           else load_private(private_key))
    data = (directory / "manifest.json").read_bytes()
    line = sign_bytes(data, key)
    return replace_atomically(directory / SIG_FILE,
                              lambda tmp: tmp.write_text(line + "\n"))


def read_signature(directory: str | os.PathLike) -> Optional[str]:
    """The ``manifest.sig`` line beside a manifest, or None when it is unsigned."""
    path = Path(directory) / SIG_FILE
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        return None


def remove_signature(directory: str | os.PathLike) -> None:
    """Drops a signature that no longer matches its manifest (the manifest was rewritten
    without a key): serving it would only make devices refuse the new version."""
    (Path(directory) / SIG_FILE).unlink(missing_ok=True)


def verify(data: bytes, signature: Optional[str], trusted: Iterable[bytes]) -> str:
    """The key id that signed ``data``; SignatureError naming the problem otherwise.
    Mirrors the C++ ``ManifestVerifier`` (for host tools and tests)."""
    keys = {key_id(k): k for k in trusted}
    if not signature:
        raise SignatureError("the manifest is not signed (no manifest.sig)")
    try:
        doc = json.loads(signature)
        alg, kid, sig = doc["alg"], doc["key_id"], base64.b64decode(doc["signature"],
                                                                      validate=True)
    except (ValueError, KeyError, TypeError) as e:
        raise SignatureError(f"the manifest signature is malformed: {e}") from e
    if alg != ALG:
        raise SignatureError(f"the manifest signature's alg is {alg!r}, not {ALG!r}")
    if kid not in keys:
        raise SignatureError(f"the manifest is signed by key {kid}, which is not trusted")
    try:
        Ed25519PublicKey.from_public_bytes(keys[kid]).verify(sig, data)
    except InvalidSignature as e:
        raise SignatureError(f"the manifest signature by key {kid} does not verify") from e
    return kid
