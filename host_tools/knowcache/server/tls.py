"""TLS for `knowcache serve`: the certificate and key are checked before the
server loads anything, so a missing, unreadable or mismatched pair is one
sentence, not a uvicorn traceback after the models have loaded."""

from __future__ import annotations

import ipaddress
import ssl
from pathlib import Path
from typing import Optional


def check_pair(cert: Optional[Path], key: Optional[Path]) -> Optional[tuple[str, str]]:
    """(certfile, keyfile) for uvicorn, or None for plain HTTP; ValueError saying what
    to fix when only one is given or the pair does not load."""
    if cert is None and key is None:
        return None
    if cert is None or key is None:
        raise ValueError("--tls-cert and --tls-key go together: pass both (PEM files), "
                         "or neither for plain HTTP")
    for what, path in (("certificate", cert), ("key", key)):
        if not Path(path).is_file():
            raise ValueError(f"the TLS {what} {path} is not a file")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(str(cert), str(key))
    except ssl.SSLError as e:
        if "KEY_VALUES_MISMATCH" in str(e) or "key values mismatch" in str(e):
            raise ValueError(f"the key {key} does not match the certificate {cert}") from e
        raise ValueError(f"cannot load the TLS certificate {cert} with the key {key}: "
                         f"{e.reason or e} (both must be PEM; the key unencrypted)") from e
    return str(cert), str(key)


def token_in_clear(host: str, token: Optional[str], tls: bool) -> bool:
    """Whether a bearer token would cross a network in clear text: a token, no TLS, and
    a host other than loopback."""
    if not token or tls:
        return False
    try:
        return not ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host != "localhost"
