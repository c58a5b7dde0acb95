"""`knowcache serve --ray`: the cloud tier on Ray Serve (the `knowcache[ray]` extra;
the only module that imports Ray).

One Serve application, ``app(args)``, of three kinds of deployment:

  Ray's HTTP proxy -> ``ingress``: the same FastAPI app as `knowcache serve`
                      (server/app.py: auth, input checks, manifest, partitions,
                      health, metrics, JSON errors), whose infer requests run in
                   -> ``model-<task>``: one deployment per task, replicas that run
                      the full model in batches (@serve.batch), one compute thread
                      with as many kernel threads as the replica has CPUs;
  ``programs``: one replica on the head node reads the models folder once; every
  other replica gets its task's bytes from it through Ray's object store, so
  other nodes need no models folder. With --learn-exits it is also the one exit
  learner per task (layer_cache/online.py), fed by every model replica;
  ``ClusterMetrics``: one replica that sums every ingress replica's metrics, so a
  scrape of /metrics anywhere answers for the whole application.

A model deployment's full queue (``max_queued_requests``) is answered 429 with
Retry-After, like `knowcache serve`'s; a replica that dies under a request is
retried once on another, then answered 503 with Retry-After.

Learning exits (--learn-exits): each model replica answers with the staged
program of the version it holds and, every ``FLUSH_EVERY_S``, sends what its
exits saw to ``programs`` (off the request path: a learner briefly away loses
those records, never a request), which answers the learner's current version.
A retrain that passes verification is published once, on the head node (new
staged file, manifest rewritten); each replica then fetches that version's
bytes and swaps it in once (a version guard), the ingress replicas serve its
manifest and bytes within ``PUSH_EVERY_S``, and a replica started later starts
from it. A retrain that fails verification changes nothing anywhere.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import math
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import ray
from ray import serve
from ray.exceptions import ActorUnavailableError, RayActorError
from ray.serve.exceptions import (BackPressureError, DeploymentUnavailableError,
                                  ReplicaUnavailableError)

from knowcache.manifest import Role
from knowcache.runtime import set_compute_threads
from knowcache.server import metrics, registry
from knowcache.server.app import create_app
from knowcache.server.batcher import QueueFull, Unavailable, run_each
from knowcache.server.config import TOKEN_ENV, ServeConfig

APP_NAME = "knowcache"
IMPORT_PATH = "knowcache.server.ray_backend:app"
HEAD_NODE = "node:__internal_head__"      # Ray's resource of the head node
# ServeConfig fields a Serve config file carries (the token comes from KNOWCACHE_TOKEN in
# the environment of every node's `ray start`, never from a file).
CONFIG_FIELDS = ("models", "batching", "max_batch", "max_wait_ms", "queue_limit",
                 "request_timeout_s", "max_body_bytes", "body_timeout_s", "learn_exits",
                 "online")


@dataclass
class ScaleConfig:
    """How the Ray back end scales: replicas per task (autoscaled between the bounds
    on ongoing requests per replica; fixed when they are equal), their CPUs, and the
    ingress's replicas."""

    min_replicas: int = 1
    max_replicas: int = 2
    replica_cpus: float = 1.0
    target_ongoing_requests: float = 8.0   # per model replica, what autoscaling aims at
    ingress_replicas: int = 1
    # The HTTP app reserves no CPU (like Ray's proxy): a replica per task fits every core.
    ingress_cpus: float = 0.0

    def __post_init__(self) -> None:
        if not 1 <= self.min_replicas <= self.max_replicas:
            raise ValueError("replicas: need 1 <= --min-replicas <= --max-replicas")
        if self.replica_cpus <= 0 or self.ingress_cpus < 0 or self.ingress_replicas < 1:
            raise ValueError("--replica-cpus must be > 0 and --ingress-replicas at least 1")

    def replicas(self) -> dict:
        """The deployment options that size a task's model deployment."""
        if self.min_replicas == self.max_replicas:
            return {"num_replicas": self.min_replicas}
        return {"autoscaling_config": {
            "min_replicas": self.min_replicas, "max_replicas": self.max_replicas,
            "target_ongoing_requests": self.target_ongoing_requests,
            "upscale_delay_s": 2.0, "downscale_delay_s": 10.0}}


def _plain(config: ServeConfig) -> dict:
    """``config``'s CONFIG_FIELDS as plain values (the learner's settings with
    --learn-exits: a dict, its signing key a path on the head node)."""
    args = {name: getattr(config, name) for name in CONFIG_FIELDS}
    args["models"] = str(Path(config.models).resolve())
    online = None
    if config.learn_exits:
        from knowcache.layer_cache.online import OnlineConfig
        online = dataclasses.asdict(config.online or OnlineConfig())
        if online["signing_key"] is not None:
            online["signing_key"] = str(Path(online["signing_key"]).resolve())
    return {**args, "online": online}


def _online(online: Optional[dict]):
    """The learner's settings from their plain values (None: no learner)."""
    if online is None:
        return None
    from knowcache.layer_cache.online import OnlineConfig
    key = online.get("signing_key")
    return OnlineConfig(**{**online, "signing_key": Path(key) if key else None})


def app_args(config: ServeConfig, scale: ScaleConfig) -> dict:
    """The application's arguments (a Serve config file's ``args``): plain values."""
    return {**_plain(config), **dataclasses.asdict(scale)}


def _split(args: dict) -> tuple[ServeConfig, ScaleConfig]:
    scale_fields = {f.name for f in dataclasses.fields(ScaleConfig)}
    unknown = set(args) - scale_fields - set(CONFIG_FIELDS)
    if unknown:
        raise ValueError(f"unknown knowcache application args: {', '.join(sorted(unknown))}")
    config = {k: v for k, v in args.items() if k in CONFIG_FIELDS}
    return (ServeConfig(**{**config, "online": _online(config.get("online"))}),
            ScaleConfig(**{k: v for k, v in args.items() if k in scale_fields}))


@serve.deployment(num_replicas=1, ray_actor_options={"num_cpus": 0,
                                                     "resources": {HEAD_NODE: 0.001}})
class Programs:
    """Reads the models folder (on the head node) and hands each task out as bytes.
    With ``online`` (plain settings, --learn-exits), each task with a staged program
    also learns its exits here from what every model replica records, and publishes
    each verified version into the folder; the bytes handed out are then the latest
    published version's."""

    def __init__(self, models: str, online: Optional[dict] = None):
        report = registry.load_all(Path(models), log=print, warn=print)
        self.loaded = report.tasks
        self.directories = report.directories
        self.tasks = {name: registry.TaskBytes.of(t, report.directories[name])
                      for name, t in report.tasks.items()}
        # task -> replica -> {"version": the staged version it serves, "swaps": versions it
        # swapped in, "recorded": requests it reported}, and when it last reported
        self.replicas: dict[str, dict[str, tuple[dict, float]]] = {}
        settings = _online(online)
        for name, task in report.tasks.items() if settings else ():
            if task.manifest.ids_with_role(Role.STAGED):
                registry.learn_or_warn(task, report.directories[name], settings, log=print,
                                       warn=print, then=lambda name=name: self._published(name))

    def _published(self, name: str) -> None:
        # One assignment, after the task serves the new version: a reader gets either one.
        self.tasks[name] = registry.TaskBytes.of(self.loaded[name], self.directories[name])

    def all(self) -> dict[str, registry.TaskBytes]:
        return self.tasks

    def task(self, name: str) -> registry.TaskBytes:
        return self.tasks[name]

    def versions(self) -> dict[str, int]:
        """Each task's manifest version (what an ingress compares its own with)."""
        return {name: t.version for name, t in self.loaded.items()}

    def not_learning(self, name: str) -> str:
        """Why task ``name``'s learner could not start ("" when it did or was not asked)."""
        return self.loaded[name].not_learning

    def learns(self, name: str) -> bool:
        """Whether task ``name`` learns its exits (its replicas then report here)."""
        return self.loaded[name].learner is not None

    def record(self, name: str, replica: str, version: int, swaps: int,
               batch: Optional[tuple]) -> int:
        """A model replica's report: the staged version it serves, how many versions it
        swapped in, and what its exits saw since its last report (``_Learning.batch``);
        answers the version it should serve."""
        replicas = self.replicas.setdefault(name, {})
        state = replicas.get(replica, ({"recorded": 0}, 0.0))[0]
        learner = self.loaded[name].learner
        if batch is not None:
            learner.record(*batch)
        recorded = state["recorded"] + (len(batch[1]) if batch is not None else 0)
        replicas[replica] = ({"version": version, "swaps": swaps, "recorded": recorded},
                             time.monotonic())
        return learner.version

    def status(self, name: str) -> Optional[dict]:
        """The learner's status and the version each model replica heard from lately
        serves (None: the task learns no exits)."""
        learner = self.loaded[name].learner
        if learner is None:
            return None
        now = time.monotonic()
        replicas = {replica: state for replica, (state, seen)
                    in self.replicas.get(name, {}).items() if now - seen < REPLICA_SEEN_S}
        return {**learner.status(), "replicas": replicas}


FLUSH_EVERY_S = 0.5       # how often a model replica reports to the learner
REPLICA_SEEN_S = 10.0     # the learner's status lists replicas heard from this recently


class _Learning:
    """A model replica's side of its task's exit learner (in ``programs``): answers with
    the staged program of the version it holds, reports what the exits saw, and swaps in
    each newer version the learner publishes, once."""

    def __init__(self, programs, name: str, task: registry.TaskBytes):
        self.programs = programs
        self.name = name
        self.model = task.staged_model()
        self.swaps = 0
        self.replica = serve.get_replica_context().replica_id.unique_id
        # (per exit feature, full logits, input) per request; appended by the compute thread
        self.records: deque = deque(maxlen=10_000)

    @property
    def version(self) -> int:
        return int(self.model.info.version)

    def logits(self, x: np.ndarray) -> np.ndarray:
        """The full model's logits for ``x``, by the staged program; records its exits'."""
        exits, logits = self.model.run_all(x)
        self.records.append(([np.asarray(e.feature, np.float32) for e in exits], logits, x))
        return logits

    def batch(self) -> Optional[tuple]:
        """What OnlineLearner.record takes, for the requests recorded so far (None: none)."""
        taken = [self.records.popleft() for _ in range(len(self.records))]
        if not taken:
            return None
        features = [np.stack(f) for f in zip(*(r[0] for r in taken))]
        return features, np.stack([r[1] for r in taken]), np.stack([r[2] for r in taken])

    async def run(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_EVERY_S)
            try:
                latest = await self.programs.record.remote(self.name, self.replica, self.version,
                                                           self.swaps, self.batch())
                if latest > self.version:
                    task = await self.programs.task.remote(self.name)
                    model = await asyncio.get_running_loop().run_in_executor(
                        None, task.staged_model)
                    if model.info.version > self.version:   # each version swapped in once
                        self.model = model
                        self.swaps += 1
            except Exception as e:  # noqa: BLE001 - the learner away: its records are lost
                print(f"knowcache: reporting to the exit learner of {self.name!r} failed "
                      f"({type(e).__name__}: {e}); trying again in {FLUSH_EVERY_S:g} s")


@serve.deployment
class TaskModel:
    """One task's full model. Requests run in batches on one compute thread (the event
    loop keeps taking requests meanwhile); ExecuTorch's kernels use the replica's CPUs."""

    async def __init__(self, programs, task: str, max_batch: int, max_wait_ms: float):
        cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1.0)
        set_compute_threads(max(1, math.floor(cpus)))
        task_bytes = await programs.task.remote(task)
        self.task = task_bytes.load()
        registry.warm_up(self.task)
        self.run = self.task.run
        self._learning: Optional[asyncio.Task] = None
        if await programs.learns.remote(task):
            learning = _Learning(programs, task, task_bytes)
            self.run = lambda x: self.task.answer(learning.logits(x))
            self._learning = asyncio.get_running_loop().create_task(learning.run())
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="knowcache-model")
        self.answer.set_max_batch_size(max_batch)
        self.answer.set_batch_wait_timeout_s(max_wait_ms / 1e3)

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.002)
    async def answer(self, xs: list[np.ndarray]) -> list[tuple[bool, Any, int]]:
        """(ok, the answer or the exception, the batch's size on its first request only:
        what the ingress counts as one batch)."""
        results = await asyncio.get_running_loop().run_in_executor(
            self._pool, run_each, [(self.run, x) for x in xs])
        return [(ok, value, len(xs) if i == 0 else 0) for i, (ok, value) in enumerate(results)]

    async def __call__(self, x: np.ndarray) -> tuple[bool, Any, int]:
        # Unpickled, x's dtype equals but is not numpy's own float32 descriptor, which the
        # runtime's binding requires (it compares them by identity).
        return await self.answer(np.asarray(x, registry.DTYPES[self.task.dtype]))


# A replica that went away while holding the request, or before taking it.
_GONE = (RayActorError, ActorUnavailableError, ReplicaUnavailableError,
         DeploymentUnavailableError)


@serve.deployment(num_replicas=1, ray_actor_options={"num_cpus": 0},
                  max_ongoing_requests=1000)
class ClusterMetrics:
    """Every ingress replica's metrics, pushed each second and before each scrape: a
    scrape of any replica's /metrics answers the sum (a replica gone keeps its last
    counts; this replica's restart is a counter reset to Prometheus)."""

    def __init__(self):
        self.snapshots: dict[str, list] = {}

    def push(self, replica: str, families: list) -> None:
        self.snapshots[replica] = families

    def merged(self, replica: str, families: list) -> list:
        self.snapshots[replica] = families
        return metrics.merge(self.snapshots.values())


PUSH_EVERY_S = 1.0


class RayCompute:
    """The ingress's side of the model deployments and of the cluster's metrics
    (app.Compute)."""

    def __init__(self, models: dict, cluster_metrics, own: metrics.ServerMetrics,
                 programs=None, tasks: Optional[dict[str, registry.TaskModels]] = None):
        self.models = models
        self.cluster_metrics = cluster_metrics
        self.own = own
        self.programs = programs     # with --learn-exits: new versions of ``tasks`` from it
        self.tasks = tasks or {}
        self.replica = serve.get_replica_context().replica_id.unique_id
        self.depth = 0          # this ingress replica's requests waiting for a model
        self._pusher: Optional[asyncio.Task] = None

    def start(self) -> None:
        self._pusher = asyncio.get_running_loop().create_task(self._push())

    async def stop(self) -> None:
        if self._pusher:
            self._pusher.cancel()

    async def _push(self) -> None:
        while True:
            await asyncio.sleep(PUSH_EVERY_S)
            try:
                await self.cluster_metrics.push.remote(self.replica, self._snapshot())
            except Exception:  # noqa: BLE001 - the hub restarting: push again next time
                pass
            try:
                if self.programs is not None:
                    await self._refresh()
            except Exception:  # noqa: BLE001 - the learner restarting: look again next time
                pass

    async def _refresh(self) -> None:
        """Serves each task's version the learner published since (manifest, bytes)."""
        for name, version in (await self.programs.versions.remote()).items():
            task = self.tasks.get(name)
            if task is not None and version > task.version:
                (await self.programs.task.remote(name)).refresh(task)

    async def layer_cache(self, task: registry.TaskModels) -> Optional[dict]:
        if self.programs is None:
            return None
        status = await self.programs.status.remote(task.name)
        if status is None:      # the app's 404 then says why the learner did not start
            task.not_learning = await self.programs.not_learning.remote(task.name)
        return status

    def _snapshot(self) -> list:
        self.own.queue_depth.set(self.depth)
        return list(self.own.registry.collect())

    async def exposition(self) -> bytes:
        return metrics.exposition(
            await self.cluster_metrics.merged.remote(self.replica, self._snapshot()))

    resumes = False          # split computing's from_stage: served by `knowcache serve` alone

    def submit(self, task: registry.TaskModels, x: np.ndarray, from_stage: Optional[int] = None):
        if from_stage is not None:      # the app answers 404 before it gets here
            raise RuntimeError("the Ray back end does not resume staged programs")
        return self._answer(task.name, x)

    async def _answer(self, name: str, x: np.ndarray) -> registry.Answer:
        self.depth += 1
        try:
            for attempt in range(2):        # the model is a pure function: retry once
                response = self.models[name].remote(x)
                try:
                    ok, value, batch = await response
                    break
                except BackPressureError:
                    raise QueueFull() from None
                except _GONE as e:
                    if attempt:
                        raise Unavailable(f"no replica of task {name!r} could take the "
                                          f"request ({type(e).__name__}); retry") from None
                except asyncio.CancelledError:
                    response.cancel()       # the request timed out: drop it from its batch
                    raise
        finally:
            self.depth -= 1
        if batch:
            self.own.batch_size.observe(batch)
        if not ok:
            raise value
        return value


@serve.deployment
@serve.ingress()
class Ingress:
    """`knowcache serve`'s app, with its models in the tasks' deployments."""

    async def __init__(self, config: dict, programs, models: dict, cluster_metrics):
        # The learner's settings are the programs deployment's, not the HTTP app's.
        self.config = ServeConfig(**{**config, "online": None})
        tasks = await programs.all.remote()
        self.report = registry.LoadReport(
            tasks={name: b.load(load_full=False) for name, b in tasks.items()})
        self.models = models
        self.cluster_metrics = cluster_metrics
        self.programs = programs if self.config.learn_exits else None

    def __serve_build_asgi_app__(self):
        return create_app(self.config, load_in_background=False, report=self.report,
                          compute=lambda _config, own: RayCompute(
                              self.models, self.cluster_metrics, own, self.programs,
                              self.report.tasks))


def build(config: ServeConfig, scale: ScaleConfig) -> serve.Application:
    """The application for ``config`` (its token reaches the ingress replicas through
    their environment, never through a file) scaled by ``scale``."""
    tasks = registry.task_names(config.models)
    if not tasks:
        raise ValueError(f"{config.models}: no <task>/manifest.json to serve")
    fields = _plain(config)
    programs = Programs.bind(fields["models"], fields["online"])
    models = {task: TaskModel.options(
        name=f"model-{task}", ray_actor_options={"num_cpus": scale.replica_cpus},
        # A batch in hand and the next one forming; beyond that, the handle's queue.
        max_ongoing_requests=2 * config.max_batch, max_queued_requests=config.queue_limit,
        **scale.replicas()).bind(programs, task, config.max_batch if config.batching else 1,
                                 config.max_wait_ms)
        for task in tasks}
    options: dict = {"num_cpus": scale.ingress_cpus}
    if config.token:
        options["runtime_env"] = {"env_vars": {TOKEN_ENV: config.token}}
    return Ingress.options(
        name="ingress", num_replicas=scale.ingress_replicas, ray_actor_options=options,
        # Overload is the models' to refuse (429): Ray's proxy would answer 503 text/plain.
        max_ongoing_requests=100_000, max_queued_requests=-1).bind(
            fields, programs, models, ClusterMetrics.bind())


def app(args: dict) -> serve.Application:
    """Serve's builder (``import_path: knowcache.server.ray_backend:app``, ``args`` from
    ``app_args``); the token is KNOWCACHE_TOKEN of the environment it is built in."""
    return build(*_split(dict(args)))


def http_options(host: str, port: int, tls: Optional[tuple[str, str]] = None) -> dict:
    """Serve's proxy settings: where it listens, and HTTPS with ``tls`` (cert, key)."""
    options = {"host": host, "port": port}
    if tls:
        options.update(ssl_certfile=tls[0], ssl_keyfile=tls[1])
    return options


def serve_config(config: ServeConfig, scale: ScaleConfig, host: str, port: int,
                 tls: Optional[tuple[str, str]] = None, route_prefix: str = "/") -> dict:
    """The Serve config file (`serve deploy FILE`) of this deployment."""
    return {"proxy_location": "EveryNode", "http_options": http_options(host, port, tls),
            "applications": [{"name": APP_NAME, "route_prefix": route_prefix,
                              "import_path": IMPORT_PATH, "args": app_args(config, scale)}]}


def write_serve_config(path: Path, config: ServeConfig, scale: ScaleConfig, host: str,
                       port: int, tls: Optional[tuple[str, str]] = None) -> None:
    import yaml                      # a dependency of Ray's
    from ray.serve.schema import ServeDeploySchema
    doc = serve_config(config, scale, host, port, tls)
    ServeDeploySchema.model_validate(doc)       # what `serve deploy` checks first
    Path(path).write_text(yaml.safe_dump(doc, sort_keys=False))


def connect(address: str, num_cpus: Optional[int], host: str, port: int,
            tls: Optional[tuple[str, str]] = None, proxies: str = "EveryNode") -> None:
    """Joins the Ray cluster at ``address`` ("local": a new one in this process, with
    ``num_cpus``) and starts Serve's proxies (on every node, or "HeadOnly") on
    ``host``:``port``."""
    if address == "local":
        ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)
    else:
        ray.init(address=address, log_to_driver=False)
    serve.start(http_options=http_options(host, port, tls), proxy_location=proxies)


def deploy(config: ServeConfig, scale: ScaleConfig, name: str = APP_NAME,
           route_prefix: str = "/") -> None:
    """Deploys the application and waits until every replica is up."""
    serve.run(build(config, scale), name=name, route_prefix=route_prefix)


def fit_to_cluster(scale: ScaleConfig, tasks: int, cpus: float, *, chosen: bool,
                   local: bool) -> tuple[ScaleConfig, Optional[str]]:
    """``scale`` sized to a cluster with ``cpus`` free CPUs for ``tasks`` model deployments,
    and what to tell the user (None: it fits as given).

    Every task's minimum replicas must be placed before Serve reports the
    application running; otherwise `serve.run` waits forever (3 shipped tasks at
    1 CPU each on a 2-core machine). A default replica size shrinks to share the
    cluster; a size the user chose that cannot fit is refused on a cluster
    started here (ValueError), and only warned about on a remote one (its
    autoscaler may add nodes)."""
    replicas = tasks * scale.min_replicas
    ingress = scale.ingress_replicas * scale.ingress_cpus
    need = replicas * scale.replica_cpus + ingress
    if need <= cpus + 1e-9:
        return scale, None
    share = math.floor((cpus - ingress) / replicas * 100) / 100
    what = (f"{tasks} task(s) x {scale.min_replicas} replica(s) x {scale.replica_cpus:g} CPU"
            f"{f' + {ingress:g} for the ingress' if ingress else ''} = {need:g} CPUs, but the "
            f"Ray cluster has {cpus:g} free")
    if not chosen and share >= 0.01:
        return (dataclasses.replace(scale, replica_cpus=share),
                f"{what}: each model replica gets {share:g} CPU (--replica-cpus to choose)")
    fix = (f"--replica-cpus {share:g} or less, " if share >= 0.01 else "") + \
        "fewer --min-replicas, or a bigger cluster (--ray-cpus, more nodes)"
    if local:
        raise ValueError(f"{what}: the replicas could never all start; use {fix}")
    return scale, (f"warning: {what}; replicas wait until the cluster grows (or use {fix})")


def run(config: ServeConfig, scale: ScaleConfig, address: str, num_cpus: Optional[int],
        host: str, port: int, tls: Optional[tuple[str, str]], say: Callable[[str], None],
        replica_cpus_chosen: bool = False) -> None:
    """`knowcache serve --ray`: serves until interrupted (Ctrl-C or SIGTERM), then
    deletes the application, and stops the cluster it started."""
    import signal
    import threading
    connect(address, num_cpus, host, port, tls)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):     # after Ray's own (which only log)
        signal.signal(sig, lambda *_: stop.set())
    try:
        scale, message = fit_to_cluster(
            scale, len(registry.task_names(config.models)),
            float(ray.available_resources().get("CPU", 0)), chosen=replica_cpus_chosen,
            local=address == "local")
        if message:
            say(message)
        deploy(config, scale)
        scheme = "https" if tls else "http"
        say(f"serving on Ray at {scheme}://{host}:{port} ({len(ray.nodes())} node(s), "
            f"{ray.cluster_resources().get('CPU', 0):g} CPUs); Ctrl-C stops it")
        stop.wait()
    finally:
        say("stopping")
        shutdown(cluster=address == "local")


def shutdown(name: str = APP_NAME, *, cluster: bool) -> None:
    """Deletes the application; with ``cluster``, stops Serve too; leaves Ray."""
    try:
        serve.delete(name)
        if cluster:
            serve.shutdown()
    finally:
        ray.shutdown()
