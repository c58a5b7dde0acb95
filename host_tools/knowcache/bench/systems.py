"""The six systems `knowcache bench` compares (four more with --layer-cache), each an
Engine built from the manifest by the C++ factory (Engine.from_manifest).

- cloud_only:  no model on the device; every query goes to the full model over the link.
- device_only: the generic compressed student (all classes, the cache's byte budget)
               answers everything on the device.
- two_stage:   knowledge caching: the specialized cached student with its calibrated
               entropy gate; the cloud answers what the gate rejects.
- cachenet:    K partitions, S LRU slots (empty at the start), entropy gate; the cloud
               answers the rest and hints the partition to download in the background.
- device_full: the full model on the device (when the device budget allows it).
- generic_gate: two_stage with the generic student in place of the specialized one
               (same bytes, its own calibrated gate): the ablation that asks what
               specializing to the popular classes buys.

With --layer-cache, four more (layer caching, on the device; no cloud needed):

- layer_cache:            the full model as a staged program; cache heads on its hidden
                          layers gated by their max probability (automated layer
                          caching, BranchyNet).
- layer_cache_learned:    the same heads gated by GATI's learned selector.
- layer_cache_entropy:    gated by the head's normalized entropy.
- layer_cache_activation: Freeze Inference's approximate cache: nearest stored
                          compact activation, filled from the queries that ran whole.

With --split-cut K, one more (split computing, Neurosurgeon/SPINN; two_stage is its
raw-input baseline):

- two_stage_split: two_stage, but a query the gate rejects is sent as the staged
                   program's int8 activation at stage K (stages 0..K-1 run on the
                   device); the cloud resumes from stage K. The raw input stays on
                   the device.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from knowcache.manifest import Role
from knowcache.runtime import Engine, FailedPreconditionError, Manifest

# One line per system, printed under the bench tables (the module docstring in short).
LEGEND = {
    "cloud_only": "every query goes to the full model in the cloud; nothing on the device",
    "device_only": "the generic compressed student answers everything on the device",
    "two_stage": "knowledge caching: the specialized cached student answers what its gate "
                 "accepts, the cloud the rest",
    "cachenet": "CacheNet: partitions in LRU slots (empty at start), downloaded as the "
                "cloud hints; the cloud answers the rest",
    "device_full": "the full model run on the device",
    "generic_gate": "two_stage with the generic student in place of the specialized one",
    "layer_cache": "layer caching: the full model in stages, exits gated by max probability",
    "layer_cache_learned": "layer caching with GATI's learned exit selector",
    "layer_cache_entropy": "layer caching with exits gated by normalized entropy",
    "layer_cache_activation": "layer caching with Freeze Inference's activation cache",
    "two_stage_split": "two_stage uploading the staged program's int8 activation at the cut "
                       "stage instead of the raw input",
}

SYSTEMS = ("cloud_only", "device_only", "two_stage", "cachenet", "device_full", "generic_gate")
LAYER_CACHE_SYSTEMS = ("layer_cache", "layer_cache_learned", "layer_cache_entropy",
                       "layer_cache_activation")
SPLIT_SYSTEMS = ("two_stage_split",)
ALL_SYSTEMS = SYSTEMS + LAYER_CACHE_SYSTEMS + SPLIT_SYSTEMS


def exit_gate_of(name: str) -> Optional[str]:
    """The exit gate a layer-cache system runs (None for the others)."""
    if name not in LAYER_CACHE_SYSTEMS:
        return None
    return name.removeprefix("layer_cache").removeprefix("_") or "confidence"
USES_CLOUD = {"cloud_only", "two_stage", "cachenet", "generic_gate", "two_stage_split"}


@dataclass(frozen=True)
class SystemOptions:
    slots: int = 2                  # cachenet's LRU slots
    local_attempts: int = 2         # cachenet: cached partitions tried before the cloud (1: the paper's policy)
    admit_after_hints: int = 1      # cachenet: hints within the last 8 before a download (1: the paper's)
    device_budget_bytes: Optional[int] = None   # None: no limit (device_full always runs)
    read_timeout_ms: int = 5000
    activation_entries: int = 512   # layer_cache_activation: entries per exit
    activation_bytes: int = 1 << 20 # layer_cache_activation: bytes, all exits
    split_cut: Optional[int] = None # two_stage_split: the stage the cloud resumes from


def _one(manifest: Manifest, role: Role) -> str:
    ids = manifest.ids_with_role(role)
    if not ids:
        raise ValueError(f"{manifest.directory}/manifest.json has no '{role}' program; "
                         "rebuild the models with `knowcache build-models`")
    return ids[0]


def skip_reason(name: str, manifest: Manifest, options: SystemOptions) -> Optional[str]:
    """Why a system cannot run on this device, or None."""
    if name == "device_full" and options.device_budget_bytes is not None:
        full = manifest.find(_one(manifest, Role.FULL))
        if full.bytes > options.device_budget_bytes:
            return (f"the full model ({full.bytes / 2**20:.1f} MiB) exceeds the device budget "
                    f"({options.device_budget_bytes / 2**20:.1f} MiB)")
    if name == "cachenet" and not manifest.ids_with_role(Role.PARTITION):
        return "the models have no CacheNet partitions"
    if (name in LAYER_CACHE_SYSTEMS + SPLIT_SYSTEMS
            and not manifest.ids_with_role(Role.STAGED)):
        return "the models have no staged program (`knowcache export --staged`)"
    if name in SPLIT_SYSTEMS and options.split_cut is None:
        return "no cut stage given (--split-cut)"
    return None


def make_engine(name: str, manifest: Manifest, cloud_url: Optional[str],
                options: SystemOptions) -> Engine:
    """A fresh engine for one system (cold: nothing downloaded yet)."""
    cloud = {"cloud_url": cloud_url, "read_timeout_ms": options.read_timeout_ms}
    if name == "cloud_only":
        return Engine(manifest.task, manifest=manifest, fetch_hints=False, **cloud)
    if name == "device_only":
        return Engine.from_manifest(manifest, install=[_one(manifest, Role.GENERIC)], threshold=1.0)
    if name == "device_full":
        return Engine.from_manifest(manifest, install=[_one(manifest, Role.FULL)], threshold=1.0)
    if name == "two_stage":
        return Engine.from_manifest(manifest, install=[_one(manifest, Role.CACHED)],
                                    fetch_hints=False, **cloud)
    if name == "generic_gate":
        return Engine.from_manifest(manifest, install=[_one(manifest, Role.GENERIC)],
                                    fetch_hints=False, **cloud)
    if name == "two_stage_split":
        try:
            return Engine.from_manifest(manifest, install=[_one(manifest, Role.CACHED)],
                                        fetch_hints=False, split="always",
                                        split_cut=options.split_cut, **cloud)
        except FailedPreconditionError as e:    # a cut that cannot keep the input local
            raise ValueError(f"two_stage_split: {e}") from None
    if name in LAYER_CACHE_SYSTEMS:
        return Engine.from_manifest(manifest, staged=True, exit_gate=exit_gate_of(name),
                                    activation_entries=options.activation_entries,
                                    activation_bytes=options.activation_bytes)
    if name == "cachenet":
        largest = max(p.bytes for p in manifest.partitions if p.role == Role.PARTITION)
        return Engine(manifest.task, manifest=manifest, slots=options.slots,
                      # slots are the binding limit; the byte budget leaves room for
                      # each program's planned activation memory
                      budget_bytes=options.slots * largest * 4, fetch_hints=True,
                      max_local_attempts=options.local_attempts,
                      admit_after_hints=options.admit_after_hints, **cloud)
    raise ValueError(f"unknown system {name!r}; choose from {', '.join(ALL_SYSTEMS)}")
