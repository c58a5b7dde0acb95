"""The knowcache device runtime for Python: a thin layer over ``knowcache._runtime``.

Everything here runs in the C++ core (ExecuTorch partitions, LRU slot cache,
entropy gate, HTTP cloud fallback); this module only turns keyword arguments
into the core's config structs. Inputs are NumPy arrays; errors are
``KnowcacheError`` subclasses (``InvalidInputError`` is also a ``ValueError``,
``NotFoundError`` also a ``LookupError``).

    from knowcache.runtime import Engine
    engine = Engine.from_models_dir("models/kws", cloud_url="http://127.0.0.1:8000")
    result = engine.infer(waveform[None, :].astype("float32"))
    print(result.label, result.source, result.total_us)
"""

from __future__ import annotations

import os
from typing import Iterable, Optional

from knowcache import _runtime as _rt
from knowcache._runtime import (  # noqa: F401  (re-exported)
    ActivationCacheStats,
    CachedModel,
    CloudAnswer,
    CloudTimeoutError,
    CloudUnavailableError,
    CorruptPartitionError,
    EngineStats,
    ExitGate,
    ExitOutput,
    ExitVerdict,
    FailedPreconditionError,
    GateDecision,
    InferenceResult,
    InputSpec,
    InstallPlan,
    InvalidInputError,
    KnowcacheError,
    LayerCacheStats,
    Manifest,
    NotFoundError,
    Partition,
    PartitionInfo,
    ProtocolError,
    ResourceExhaustedError,
    SlotCacheStats,
    StagedModel,
    activation_entry_bytes,
    gate_evaluate,
    set_compute_threads,
    sha256_hex,
)

__all__ = [
    "CloudClient", "Engine", "InstallPlan", "Manifest", "PartitionInfo", "Partition", "SlotCache",
    "StagedModel", "ExitGate", "ExitOutput", "gate_evaluate", "activation_entry_bytes",
    "set_compute_threads", "sha256_hex", "KnowcacheError", "InvalidInputError", "NotFoundError",
    "CorruptPartitionError", "CloudUnavailableError", "CloudTimeoutError",
    "ResourceExhaustedError", "FailedPreconditionError", "ProtocolError",
]

DEFAULT_BUDGET_BYTES = 64 << 20


def _cloud_config(url: Optional[str], token: Optional[str], connect_timeout_ms: int,
                  read_timeout_ms: int, ca_file: Optional[str] = None,
                  pcm16_uploads: bool = True) -> "_rt.CloudClientConfig":
    return _rt.CloudClientConfig(
        base_url=url or "", token=token or "",
        connect_timeout_ms=connect_timeout_ms, read_timeout_ms=read_timeout_ms,
        ca_file=os.fspath(ca_file) if ca_file else "", pcm16_uploads=pcm16_uploads)


class SlotCache(_rt.SlotCache):
    """LRU cache of partitions with a slot count and a byte budget."""

    def __init__(self, slots: int = 2, budget_bytes: int = DEFAULT_BUDGET_BYTES):
        super().__init__(_rt.SlotCacheConfig(slots, budget_bytes))


class CloudClient(_rt.CloudClient):
    """HTTP client for ``knowcache serve`` (POST infer, GET manifest and partitions)."""

    def __init__(self, url: str, *, token: Optional[str] = None, connect_timeout_ms: int = 1000,
                 read_timeout_ms: int = 5000, ca_file: Optional[str] = None,
                 pcm16_uploads: bool = True):
        super().__init__(_cloud_config(url, token, connect_timeout_ms, read_timeout_ms, ca_file,
                                       pcm16_uploads))


def _engine_config(task: str, *, slots: int = 2, budget_bytes: int = DEFAULT_BUDGET_BYTES,
                   cloud_url: Optional[str] = None, token: Optional[str] = None,
                   connect_timeout_ms: int = 1000, read_timeout_ms: int = 5000,
                   fetch_hints: bool = True, max_local_attempts: int = 1,
                   threshold: Optional[float] = None, admit_after_hints: int = 1,
                   hint_window: int = 8, exit_gate: str = "learned",
                   activation_entries: int = 512,
                   activation_bytes: int = 1 << 20, ca_file: Optional[str] = None,
                   private_share: float = 0.2,
                   local_only: bool = False, trusted_keys: Iterable[str] = (),
                   require_signature: bool = False, split: str = "off",
                   split_cut: int = 0, pcm16_uploads: bool = True) -> "_rt.EngineConfig":
    return _rt.EngineConfig(
        task=task,
        cache=_rt.SlotCacheConfig(slots, budget_bytes),
        cloud=_cloud_config(cloud_url, token, connect_timeout_ms, read_timeout_ms, ca_file,
                            pcm16_uploads),
        fetch_hints=fetch_hints,
        max_local_attempts=max_local_attempts,
        threshold_override=-1.0 if threshold is None else float(threshold),
        admit_after_hints=admit_after_hints, hint_window=hint_window,
        exit_gate=exit_gate, activation_entries=activation_entries,
        activation_bytes=activation_bytes,
        private_share=private_share, local_only=local_only,
        trusted_keys=[str(k).strip() for k in trusted_keys], require_signature=require_signature,
        split=split, split_cut=split_cut,
    )


class Engine:
    """Two-stage inference: cached partitions on the device, the cloud for the rest.

    ``infer`` never fails because the cloud is down or slow: it then returns
    the local answer with ``source == "degraded"``. It raises only for bad
    input, or when no partition is cached and no cloud answers. Inputs of the
    manifest's private classes never leave the device (``source == "private"``,
    ``is_private``), and ``local_only=True`` never asks the cloud
    (``source == "local_only"``): docs/security.md. With a staged
    program installed (``mode == "staged"``, layer caching) it answers through
    the program's exits instead and does not ask the cloud.

    Keyword arguments: ``slots``, ``budget_bytes``, ``cloud_url``, ``token``,
    ``connect_timeout_ms``, ``read_timeout_ms``, ``fetch_hints``,
    ``max_local_attempts``, ``threshold`` (replaces every calibrated one),
    ``admit_after_hints``, ``hint_window``, ``exit_gate``,
    ``activation_entries``, ``activation_bytes``, ``ca_file`` (https: the CAs
    the cloud's certificate must chain to; default the system's),
    ``private_share``, ``local_only``, ``trusted_keys`` (base64 Ed25519 public
    keys, a ``.pub`` file's line: every manifest must be signed by one, see
    docs/security.md), ``require_signature``, ``split`` ("off", "auto" or "always":
    split computing, which uploads the staged program's int8 activation at stage
    ``split_cut`` instead of the raw input; ``from_manifest`` then installs the
    staged program too, and refuses a cut before a stage that reads the raw
    input: docs/security.md), ``split_cut``, ``pcm16_uploads`` (default on: an
    input that 16-bit PCM holds exactly, 16-bit audio, is uploaded as int16,
    half the bytes; off for a cloud older than that encoding).
    """

    def __init__(self, task: str, *, manifest: Optional[Manifest] = None, **kwargs):
        config = _engine_config(task, **kwargs)
        if manifest is None:
            self._engine = _rt.Engine(config)
        else:  # nothing installed: a cold device
            self._engine = _rt.Engine.from_manifest(config, manifest, _rt.InstallPlan.none())
        self.manifest: Optional[Manifest] = manifest

    @classmethod
    def from_manifest(cls, manifest: Manifest, *, install: Iterable[str] = (),
                      staged: bool = False, pin: bool = True, **kwargs) -> "Engine":
        """An engine for ``manifest``'s task, built by the C++ ``Engine::FromManifest``.

        ``install`` lists partition ids to load now (pinned unless ``pin`` is
        False; the first is active); by default the ``cached`` role's
        partitions are installed. ``staged`` installs the staged program
        instead (layer caching, with ``exit_gate``).
        """
        if staged:
            plan = _rt.InstallPlan.staged()
        elif install:
            plan = _rt.InstallPlan.ids(list(install), pin)
        else:
            plan = _rt.InstallPlan.cached(pin)
        engine = cls.__new__(cls)
        engine._engine = _rt.Engine.from_manifest(_engine_config(manifest.task, **kwargs),
                                                  manifest, plan)
        engine.manifest = manifest
        return engine

    @classmethod
    def from_models_dir(cls, models_dir: str | os.PathLike, **kwargs) -> "Engine":
        """``from_manifest`` for ``models_dir/manifest.json``; with ``trusted_keys`` it
        must verify against ``models_dir/manifest.sig``."""
        keys = [str(k).strip() for k in kwargs.get("trusted_keys", ())]
        return cls.from_manifest(Manifest.load_signed(os.fspath(models_dir), keys), **kwargs)

    def set_manifest(self, manifest: Manifest) -> None:
        self._engine.set_manifest(manifest)
        self.manifest = manifest

    def install_from_manifest(self, partition_id: str, *, pinned: bool = False) -> None:
        """Loads a partition named in the manifest from disk into a slot."""
        self._engine.install_from_manifest(partition_id, pinned)

    def install_staged_from_manifest(self, partition_id: str = "staged") -> None:
        """Layer caching: infer runs this staged program exit by exit from now on."""
        self._engine.install_staged_from_manifest(partition_id)

    def layer_cache_stats(self) -> "_rt.LayerCacheStats":
        return self._engine.layer_cache_stats()

    def install(self, model: CachedModel, *, pinned: bool = False) -> None:
        self._engine.install(model, pinned)

    def activate(self, partition_id: str) -> None:
        self._engine.activate(partition_id)

    def infer(self, x) -> InferenceResult:
        """Classifies one input (a NumPy array matching the partitions' input spec)."""
        return self._engine.infer(x)

    def wait_for_fetches(self, timeout_s: float = 10.0) -> bool:
        """Blocks until background partition downloads finish; False on timeout."""
        return self._engine.wait_for_fetches(int(timeout_s * 1000))

    @property
    def mode(self) -> str:
        """How the engine answers locally: "partitions" or "staged" (layer caching)."""
        return self._engine.mode

    def cached_ids(self) -> list[str]:
        return self._engine.cached_ids()

    def active_id(self) -> str:
        return self._engine.active_id()

    def stats(self) -> EngineStats:
        return self._engine.stats()

    @property
    def config(self) -> "_rt.EngineConfig":
        return self._engine.config


def result_to_dict(result: InferenceResult) -> dict:
    """A JSON-ready dict of an InferenceResult."""
    keys = ("label", "index", "confidence", "entropy", "source", "partition_id", "partition_hint",
            "degraded_reason", "local_attempts", "local_us", "network_us", "total_us",
            "uplink_bytes", "uplink", "split_reason", "exit_index", "flops", "lookup_us", "is_private", "private_mass",
            "kept_reason")
    return {k: getattr(result, k) for k in keys}
