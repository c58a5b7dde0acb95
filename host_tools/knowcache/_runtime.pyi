"""Type stub for knowcache._runtime (generated with pybind11-stubgen, then checked by hand)."""
"""
knowcache C++ runtime (ExecuTorch partitions, slot cache, entropy gate, cloud fallback)
"""
from __future__ import annotations
import collections.abc
import numpy
import numpy.typing
import typing
__all__: list[str] = ['ActivationCacheStats', 'CachedModel', 'CloudAnswer', 'CloudClient', 'CloudClientConfig', 'CloudTimeoutError', 'CloudUnavailableError', 'CorruptPartitionError', 'Engine', 'EngineConfig', 'EngineStats', 'ExitGate', 'ExitOutput', 'ExitVerdict', 'FailedPreconditionError', 'GateDecision', 'InferenceResult', 'InputSpec', 'InstallPlan', 'InvalidInputError', 'KnowcacheError', 'LayerCacheStats', 'Manifest', 'NotFoundError', 'Partition', 'PartitionInfo', 'ProtocolError', 'ResourceExhaustedError', 'SlotCache', 'SlotCacheConfig', 'SlotCacheStats', 'StagedModel', 'activation_entry_bytes', 'gate_evaluate', 'set_compute_threads', 'sha256_hex']
class KnowcacheError(RuntimeError):
    """
    Base class of every error the knowcache runtime raises.
    """
class InvalidInputError(KnowcacheError, ValueError):
    """
    Bad input or configuration: wrong shape, dtype, threshold...
    """
class NotFoundError(KnowcacheError, LookupError):
    """
    A file, partition or manifest entry does not exist.
    """
class CorruptPartitionError(KnowcacheError):
    """
    Bytes failed verification (sha256, size, .pte parse).
    """
class CloudUnavailableError(KnowcacheError):
    """
    The cloud could not be reached.
    """
class CloudTimeoutError(KnowcacheError):
    """
    The cloud did not answer in time.
    """
class ResourceExhaustedError(KnowcacheError):
    """
    A slot, byte budget or size limit would be exceeded.
    """
class FailedPreconditionError(KnowcacheError):
    """
    The call is not allowed in the current state.
    """
class ProtocolError(KnowcacheError):
    """
    A peer answered something unintelligible.
    """
class InputSpec:
    def __repr__(self) -> str:
        ...
    def check(self, input: typing.Any) -> None:
        """
        Raises ValueError where the input breaks the spec (dtype, shape, a value outside value_range), with the engine's own message.
        """
    @property
    def dtype(self) -> str:
        ...
    @property
    def image_size(self) -> list[int]:
        ...
    @property
    def sample_rate(self) -> int:
        ...
    @property
    def shape(self) -> list[int]:
        ...
    @property
    def value_range(self) -> tuple[float, float] | None:
        ...
class PartitionInfo:
    @staticmethod
    def parse(text: str) -> PartitionInfo:
        """
        Parses and validates one manifest entry (JSON text).
        """
    def __repr__(self) -> str:
        ...
    @property
    def bytes(self) -> int:
        ...
    @property
    def file(self) -> str:
        ...
    @property
    def id(self) -> str:
        ...
    @property
    def input(self) -> InputSpec:
        ...
    @property
    def labels(self) -> list[str]:
        ...
    @property
    def other_index(self) -> int:
        ...
    @property
    def role(self) -> str:
        ...
    @property
    def sha256(self) -> str:
        ...
    @property
    def threshold(self) -> float:
        ...
    @property
    def version(self) -> int:
        ...
class Manifest:
    @staticmethod
    def load(path: str) -> Manifest:
        """
        Reads and validates a manifest.json file.
        """
    @staticmethod
    def load_signed(directory: str, trusted_keys: collections.abc.Sequence[str]) -> Manifest:
        """
        Reads directory/manifest.json; with trusted keys (base64 Ed25519 public keys) it must verify against directory/manifest.sig.
        """
    @staticmethod
    def parse(text: str) -> Manifest:
        """
        Parses and validates manifest JSON text.
        """
    def find(self, id: str) -> typing.Any:
        ...
    def ids_with_role(self, role: str) -> list[str]:
        """
        Ids of the partitions with this role, in manifest order.
        """
    def path_of(self, info: PartitionInfo) -> str:
        ...
    @property
    def directory(self) -> str:
        ...
    @property
    def labels(self) -> list[str]:
        ...
    @property
    def partitions(self) -> list[PartitionInfo]:
        ...
    @property
    def private_labels(self) -> list[str]:
        ...
    @property
    def schema_version(self) -> int:
        ...
    @property
    def signed_by(self) -> str:
        """
        Id of the trusted key whose signature was verified; '' when unchecked.
        """
    @property
    def task(self) -> str:
        ...
    @property
    def version(self) -> int:
        ...
class GateDecision:
    def __repr__(self) -> str:
        ...
    @property
    def accept(self) -> bool:
        ...
    @property
    def entropy(self) -> float:
        ...
    @property
    def index(self) -> int:
        ...
    @property
    def is_other(self) -> bool:
        ...
    @property
    def margin(self) -> float:
        ...
    @property
    def max_prob(self) -> float:
        ...
    @property
    def probs(self) -> numpy.typing.NDArray[numpy.float32]:
        ...
class CachedModel:
    pass
class Partition(CachedModel):
    @staticmethod
    def from_bytes(data: bytes, info: PartitionInfo, verify: bool = True) -> Partition:
        ...
    @staticmethod
    def from_file(path: str, info: PartitionInfo = None, verify: bool = True) -> Partition:
        ...
    def run(self, input: typing.Any) -> numpy.typing.NDArray[numpy.float32]:
        """
        Runs one input; returns a copy of the logits.
        """
    @property
    def id(self) -> str:
        ...
    @property
    def info(self) -> PartitionInfo:
        ...
    @property
    def input_dtype(self) -> str:
        ...
    @property
    def input_shape(self) -> list[int]:
        ...
    @property
    def num_outputs(self) -> int:
        ...
    @property
    def resident_bytes(self) -> int:
        ...
class SlotCacheConfig:
    def __init__(self, num_slots: typing.SupportsInt | typing.SupportsIndex = 2, byte_budget: typing.SupportsInt | typing.SupportsIndex = 67108864) -> None:
        ...
    def __repr__(self) -> str:
        ...
    @property
    def byte_budget(self) -> int:
        ...
    @byte_budget.setter
    def byte_budget(self, arg0: typing.SupportsInt | typing.SupportsIndex) -> None:
        ...
    @property
    def num_slots(self) -> int:
        ...
    @num_slots.setter
    def num_slots(self, arg0: typing.SupportsInt | typing.SupportsIndex) -> None:
        ...
class SlotCacheStats:
    def __repr__(self) -> str:
        ...
    @property
    def evictions(self) -> int:
        ...
    @property
    def hits(self) -> int:
        ...
    @property
    def installs(self) -> int:
        ...
    @property
    def misses(self) -> int:
        ...
    @property
    def resident_bytes(self) -> int:
        ...
    @property
    def slots_used(self) -> int:
        ...
class SlotCache:
    def __contains__(self, arg0: str) -> bool:
        ...
    def __init__(self, config: SlotCacheConfig) -> None:
        ...
    def get(self, id: str) -> CachedModel:
        ...
    def ids(self) -> list[str]:
        """
        Cached ids, most recently used first.
        """
    def install(self, model: CachedModel, pinned: bool = False) -> None:
        ...
    def peek(self, id: str) -> CachedModel:
        ...
    def remove(self, id: str) -> None:
        ...
    def set_pinned(self, id: str, pinned: bool) -> None:
        ...
    def stats(self) -> SlotCacheStats:
        ...
    @property
    def config(self) -> SlotCacheConfig:
        ...
class CloudClientConfig:
    base_url: str
    ca_file: str
    token: str
    def __init__(self, base_url: str = '', token: str = '', connect_timeout_ms: typing.SupportsInt | typing.SupportsIndex = 1000, read_timeout_ms: typing.SupportsInt | typing.SupportsIndex = 5000, max_response_bytes: typing.SupportsInt | typing.SupportsIndex = 268435456, ca_file: str = '', pcm16_uploads: bool = True) -> None:
        ...
    def __repr__(self) -> str:
        ...
    @property
    def connect_timeout_ms(self) -> int:
        ...
    @connect_timeout_ms.setter
    def connect_timeout_ms(self, arg0: typing.SupportsInt | typing.SupportsIndex) -> None:
        ...
    @property
    def max_response_bytes(self) -> int:
        ...
    @max_response_bytes.setter
    def max_response_bytes(self, arg0: typing.SupportsInt | typing.SupportsIndex) -> None:
        ...
    @property
    def pcm16_uploads(self) -> bool:
        ...
    @pcm16_uploads.setter
    def pcm16_uploads(self, arg0: bool) -> None:
        ...
    @property
    def read_timeout_ms(self) -> int:
        ...
    @read_timeout_ms.setter
    def read_timeout_ms(self, arg0: typing.SupportsInt | typing.SupportsIndex) -> None:
        ...
class CloudAnswer:
    def __repr__(self) -> str:
        ...
    @property
    def confidence(self) -> float:
        ...
    @property
    def index(self) -> int:
        ...
    @property
    def label(self) -> str:
        ...
    @property
    def model_version(self) -> str:
        ...
    @property
    def partition_hint(self) -> str:
        ...
    @property
    def server_ms(self) -> float:
        ...
    @property
    def uplink_bytes(self) -> int:
        ...
class CloudClient:
    def __init__(self, config: CloudClientConfig) -> None:
        ...
    def fetch_manifest(self, task: str) -> Manifest:
        ...
    def fetch_partition(self, task: str, id: str) -> bytes:
        ...
    def infer(self, task: str, input: typing.Any) -> CloudAnswer:
        ...
    @property
    def config(self) -> CloudClientConfig:
        ...
class ExitOutput:
    def __init__(self, logits: typing.Annotated[numpy.typing.ArrayLike, numpy.float32], selector: typing.SupportsFloat | typing.SupportsIndex, feature: typing.Annotated[numpy.typing.ArrayLike, numpy.float32]) -> None:
        ...
    @property
    def feature(self) -> numpy.typing.NDArray[numpy.float32]:
        ...
    @property
    def logits(self) -> numpy.typing.NDArray[numpy.float32]:
        ...
    @property
    def selector(self) -> float:
        ...
class StagedModel:
    @staticmethod
    def from_file(path: str, info: PartitionInfo, verify: bool = True) -> StagedModel:
        ...
    def run_all(self, input: typing.Any) -> tuple[list[ExitOutput], numpy.typing.NDArray[numpy.float32]]:
        """
        Every stage and every exit (no gating): (exit outputs, final logits).
        """
    def run_exit(self, exit: typing.SupportsInt | typing.SupportsIndex, activation: typing.Any) -> ExitOutput:
        ...
    def run_head(self, activation: typing.Any) -> numpy.typing.NDArray[numpy.float32]:
        ...
    def run_stage(self, stage: typing.SupportsInt | typing.SupportsIndex, input: typing.Any, model_input: typing.Any = None) -> numpy.typing.NDArray[numpy.float32]:
        """
        Stage `stage` on `input` (the model input for stage 0, else the previous stage's output); stages that read the model input too need `model_input`.
        """
    def stage_reads_input(self, stage: typing.SupportsInt | typing.SupportsIndex) -> bool:
        ...
    @property
    def info(self) -> PartitionInfo:
        ...
    @property
    def input_shape(self) -> list[int]:
        ...
    @property
    def num_exits(self) -> int:
        ...
    @property
    def num_stages(self) -> int:
        ...
    @property
    def resident_bytes(self) -> int:
        ...
class ExitVerdict:
    def __repr__(self) -> str:
        ...
    @property
    def confidence(self) -> float:
        ...
    @property
    def hit(self) -> bool:
        ...
    @property
    def index(self) -> int:
        ...
    @property
    def score(self) -> float:
        ...
class ActivationCacheStats:
    def __repr__(self) -> str:
        ...
    @property
    def entries(self) -> int:
        ...
    @property
    def evictions(self) -> int:
        ...
    @property
    def hits(self) -> int:
        ...
    @property
    def inserts(self) -> int:
        ...
    @property
    def lookups(self) -> int:
        ...
    @property
    def memory_bytes(self) -> int:
        ...
class ExitGate:
    def __init__(self, kind: str, max_entries: typing.SupportsInt | typing.SupportsIndex = 512, max_bytes: typing.SupportsInt | typing.SupportsIndex = 1048576) -> None:
        ...
    def activation_stats(self) -> ActivationCacheStats:
        ...
    def evaluate(self, exit: typing.SupportsInt | typing.SupportsIndex, output: ExitOutput, threshold: typing.SupportsFloat | typing.SupportsIndex) -> ExitVerdict:
        ...
    def observe(self, exit: typing.SupportsInt | typing.SupportsIndex, output: ExitOutput, final_index: typing.SupportsInt | typing.SupportsIndex) -> None:
        ...
    @property
    def kind(self) -> str:
        ...
class LayerCacheStats:
    def __repr__(self) -> str:
        ...
    @property
    def activation(self) -> ActivationCacheStats:
        ...
    @property
    def exit_hits(self) -> list[int]:
        ...
    @property
    def flops(self) -> int:
        ...
    @property
    def full_runs(self) -> int:
        ...
    @property
    def queries(self) -> int:
        ...
class EngineConfig:
    cache: SlotCacheConfig
    cloud: CloudClientConfig
    fetch_hints: bool
    local_only: bool
    task: str
    def __init__(self, task: str, cache: SlotCacheConfig = ..., cloud: CloudClientConfig = ..., fetch_hints: bool = True, max_local_attempts: typing.SupportsInt | typing.SupportsIndex = 1, threshold_override: typing.SupportsFloat | typing.SupportsIndex = -1.0, admit_after_hints: typing.SupportsInt | typing.SupportsIndex = 1, hint_window: typing.SupportsInt | typing.SupportsIndex = 8, exit_gate: str = 'learned', activation_entries: typing.SupportsInt | typing.SupportsIndex = 512, activation_bytes: typing.SupportsInt | typing.SupportsIndex = 1048576, private_share: typing.SupportsFloat | typing.SupportsIndex = 0.20000000298023224, local_only: bool = False, trusted_keys: collections.abc.Sequence[str] = [], require_signature: bool = False, split: str = 'off', split_cut: typing.SupportsInt | typing.SupportsIndex = 0) -> None:
        ...
    def __repr__(self) -> str:
        ...
    @property
    def admit_after_hints(self) -> int:
        ...
    @admit_after_hints.setter
    def admit_after_hints(self, arg0: typing.SupportsInt | typing.SupportsIndex) -> None:
        ...
    @property
    def exit_gate(self) -> str:
        ...
    @property
    def split(self) -> str:
        ...
    @property
    def split_cut(self) -> int:
        ...
    @property
    def hint_window(self) -> int:
        ...
    @hint_window.setter
    def hint_window(self, arg0: typing.SupportsInt | typing.SupportsIndex) -> None:
        ...
    @property
    def max_local_attempts(self) -> int:
        ...
    @max_local_attempts.setter
    def max_local_attempts(self, arg0: typing.SupportsInt | typing.SupportsIndex) -> None:
        ...
    @property
    def private_share(self) -> float:
        ...
    @private_share.setter
    def private_share(self, arg0: typing.SupportsFloat | typing.SupportsIndex) -> None:
        ...
    @property
    def require_signature(self) -> bool:
        ...
    @property
    def threshold_override(self) -> float:
        ...
    @threshold_override.setter
    def threshold_override(self, arg0: typing.SupportsFloat | typing.SupportsIndex) -> None:
        ...
    @property
    def trusted_keys(self) -> list[str]:
        ...
class InferenceResult:
    def __repr__(self) -> str:
        ...
    @property
    def confidence(self) -> float:
        ...
    @property
    def degraded_reason(self) -> str:
        ...
    @property
    def entropy(self) -> float:
        ...
    @property
    def exit_index(self) -> int:
        ...
    @property
    def flops(self) -> int:
        ...
    @property
    def is_private(self) -> bool:
        ...
    @property
    def index(self) -> int:
        ...
    @property
    def kept_reason(self) -> str:
        ...
    @property
    def uplink(self) -> str:
        ...
    @property
    def split_reason(self) -> str:
        ...
    @property
    def label(self) -> str:
        ...
    @property
    def local_attempts(self) -> int:
        ...
    @property
    def local_us(self) -> int:
        ...
    @property
    def lookup_us(self) -> int:
        ...
    @property
    def network_us(self) -> int:
        ...
    @property
    def partition_hint(self) -> str:
        ...
    @property
    def partition_id(self) -> str:
        ...
    @property
    def private_mass(self) -> float:
        ...
    @property
    def source(self) -> str:
        ...
    @property
    def total_us(self) -> int:
        ...
    @property
    def uplink_bytes(self) -> int:
        ...
class EngineStats:
    def __repr__(self) -> str:
        ...
    @property
    def cache(self) -> SlotCacheStats:
        ...
    @property
    def cloud(self) -> int:
        ...
    @property
    def cloud_errors(self) -> int:
        ...
    @property
    def degraded(self) -> int:
        ...
    @property
    def fetch_failures(self) -> int:
        ...
    @property
    def fetched_bytes(self) -> int:
        ...
    @property
    def fetches(self) -> int:
        ...
    @property
    def kept_local_only(self) -> int:
        ...
    @property
    def feature_uploads(self) -> int:
        ...
    @property
    def kept_private(self) -> int:
        ...
    @property
    def last_fetch_error(self) -> str:
        ...
    @property
    def local(self) -> int:
        ...
    @property
    def queries(self) -> int:
        ...
    @property
    def uplink_bytes(self) -> int:
        ...
class InstallPlan:
    @staticmethod
    def cached(pinned: bool = True) -> InstallPlan:
        """
        Every partition with role 'cached' (the default).
        """
    @staticmethod
    def ids(ids: collections.abc.Sequence[str], pinned: bool = True) -> InstallPlan:
        """
        These partitions, in order; the first is active.
        """
    @staticmethod
    def none() -> InstallPlan:
        """
        Nothing: a cold device.
        """
    @staticmethod
    def staged() -> InstallPlan:
        """
        The staged program: the engine answers through its exits.
        """
    def __repr__(self) -> str:
        ...
class Engine:
    @staticmethod
    def from_manifest(config: EngineConfig, manifest: Manifest, plan: InstallPlan = ...) -> Engine:
        """
        An engine for the manifest's task with `plan` installed from its folder.
        """
    def __init__(self, config: EngineConfig) -> None:
        ...
    def activate(self, id: str) -> None:
        ...
    def active_id(self) -> str:
        ...
    def cached_ids(self) -> list[str]:
        ...
    def infer(self, input: typing.Any) -> InferenceResult:
        ...
    def install(self, model: CachedModel, pinned: bool = False) -> None:
        ...
    def install_from_manifest(self, id: str, pinned: bool = False) -> None:
        ...
    def install_staged(self, model: StagedModel) -> None:
        ...
    def install_staged_from_manifest(self, id: str) -> None:
        ...
    def layer_cache_stats(self) -> LayerCacheStats:
        ...
    def local_input(self) -> InputSpec:
        ...
    def set_manifest(self, manifest: Manifest) -> None:
        ...
    def stats(self) -> EngineStats:
        ...
    def wait_for_fetches(self, timeout_ms: typing.SupportsInt | typing.SupportsIndex = 10000) -> bool:
        ...
    @property
    def config(self) -> EngineConfig:
        ...
    @property
    def mode(self) -> str:
        ...
def activation_entry_bytes(dim: typing.SupportsInt | typing.SupportsIndex) -> int:
    ...
def gate_evaluate(logits: typing.Annotated[numpy.typing.ArrayLike, numpy.float32], threshold: typing.SupportsFloat | typing.SupportsIndex, other_index: typing.SupportsInt | typing.SupportsIndex = -1) -> GateDecision:
    """
    Softmax, normalized entropy H(p)/log(C) and the accept decision.
    """
def set_compute_threads(n: typing.SupportsInt | typing.SupportsIndex) -> None:
    """
    Sets how many threads ExecuTorch's kernels use in this process (1 = one device core).
    """
def sha256_hex(data: bytes) -> str:
    """
    SHA-256 of bytes as lowercase hex (OpenSSL).
    """
