"""The FastAPI application of `knowcache serve`.

Routes (the protocol the C++ CloudClient speaks):
  POST /v1/{task}/infer            raw tensor bytes, X-Knowcache-Dtype / X-Knowcache-Shape;
                                   X-Knowcache-Encoding: pcm16 for a float32 tensor sent as
                                   int16 q, each value q / 32768 (16-bit audio)
       ?from_stage=k               split computing: the staged program's int8 activation at
                                   stage k, X-Knowcache-Scale, X-Knowcache-Staged-Version
                                   (server/split.py)
  GET  /v1/{task}/manifest         the task's manifest.json (X-Knowcache-Signature: its
                                   manifest.sig line when signed)
  GET  /v1/{task}/manifest.sig     the manifest's detached signature (404 when unsigned)
  GET  /v1/{task}/partitions/{id}  a .pte; ETag = sha256, If-None-Match -> 304
  GET  /healthz, /readyz, /metrics

Every input check happens before anything reaches the model; errors are
``{"detail": "..."}`` with a status that says whose fault it was.
"""

from __future__ import annotations

import asyncio
import functools
import hmac
import logging
import threading
import time
from contextlib import asynccontextmanager
from typing import Awaitable, Callable, Optional, Protocol

import numpy as np
from fastapi import Depends, FastAPI, Header, HTTPException, Path, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, Field
from starlette.requests import ClientDisconnect

from knowcache import __version__, signing
from knowcache.server import registry
from knowcache.server.batcher import DynamicBatcher, QueueFull, Unavailable
from knowcache.server.config import ServeConfig
from knowcache.server.metrics import ServerMetrics
from knowcache.server.split import SplitRefused, decode, parse_shape_header

_log = logging.getLogger("knowcache.serve")

PARTITION = Path(..., pattern=r"^[A-Za-z0-9_.-]{1,128}$", description="Partition id")
SHAPE_DOC = {"pattern": r"^[0-9]+(,[0-9]+)*$"}
# How a raw input's body carries its tensor: its own bytes, or (float32 only) 16-bit
# PCM, value = q * PCM16_STEP, exact for any float32 multiple of 2^-15 in [-1, 1).
ENCODINGS = ("raw", "pcm16")
PCM16_STEP = 1.0 / 32768


class InferAnswer(BaseModel):
    label: str = Field(description="The full model's answer")
    index: int = Field(description="Index of the label in the task's label list")
    confidence: float = Field(description="Softmax probability of the answer")
    partition_hint: Optional[str] = Field(None, description="Partition the device should cache")
    model_version: int = Field(description="Manifest version of the task's models")
    server_ms: float = Field(description="Time spent in the server, queueing included")


class Problem(BaseModel):
    detail: str


ERRORS = {code: {"model": Problem} for code in (400, 401, 404, 408, 409, 413, 429, 503, 504)}


class Compute(Protocol):
    """Where infer requests run: this process's batcher (``LocalCompute``) or a Ray
    Serve deployment per task (``knowcache.server.ray_backend``). ``submit`` raises
    QueueFull (429) when the model's queue is full, Unavailable (503) when no model
    can take the request. ``exposition`` is the Prometheus text of every server
    answering for the app (this one's alone locally). ``resumes``: whether ``submit``
    takes ``from_stage`` (split computing: resume the staged program there).
    ``layer_cache``: the task's exit learner's status, None when it learns none."""

    depth: int
    resumes: bool

    def start(self) -> None: ...

    async def stop(self) -> None: ...

    def submit(self, task: registry.TaskModels, x: np.ndarray,
               from_stage: Optional[int] = None) -> Awaitable[registry.Answer]: ...

    async def exposition(self) -> bytes: ...

    async def layer_cache(self, task: registry.TaskModels) -> Optional[dict]: ...


# (settings, this server's metrics) -> where infer requests run
ComputeFactory = Callable[[ServeConfig, ServerMetrics], Compute]


class LocalCompute:
    """The task's full model in this process, through the dynamic batcher."""

    def __init__(self, config: ServeConfig, metrics: ServerMetrics):
        self.metrics = metrics
        self.batcher = DynamicBatcher(batching=config.batching, max_batch=config.max_batch,
                                      max_wait_ms=config.max_wait_ms,
                                      queue_limit=config.queue_limit,
                                      on_batch=metrics.batch_size.observe)

    @property
    def depth(self) -> int:
        return self.batcher.depth

    def start(self) -> None:
        self.batcher.start()

    async def stop(self) -> None:
        await self.batcher.stop()

    resumes = True

    def submit(self, task: registry.TaskModels, x: np.ndarray,
               from_stage: Optional[int] = None) -> Awaitable[registry.Answer]:
        run = task.run if from_stage is None else functools.partial(task.resume, from_stage)
        return self.batcher.submit(run, x)

    async def exposition(self) -> bytes:
        return generate_latest(self.metrics.registry)

    async def layer_cache(self, task: registry.TaskModels) -> Optional[dict]:
        return task.learner.status() if task.learner else None


class _State:
    def __init__(self, config: ServeConfig, report: Optional[registry.LoadReport] = None,
                 compute: ComputeFactory = LocalCompute):
        self.report = report
        self.config = config
        self.tasks: dict[str, registry.TaskModels] = {}
        self.ready = threading.Event()
        self.load_error: Optional[str] = None
        self.metrics = ServerMetrics()
        self.compute = compute(config, self.metrics)

    def load(self) -> None:
        try:
            report = self.report or registry.load_all(
                self.config.models, self.config.learn_exits, self.config.online,
                log=_log.info, warn=_log.warning)
            if not report.tasks:
                self.load_error = report.summary()
                return
            for t in report.tasks.values():
                if t.full is not None:       # a Ray ingress: its deployments warm up
                    registry.warm_up(t)
            self.tasks = report.tasks
            self.ready.set()
        except Exception as e:  # noqa: BLE001 - reported by /readyz and every infer
            self.load_error = f"{type(e).__name__}: {e}"
            _log.error("loading the models failed: %s", self.load_error)


def _validation_problem(exc: RequestValidationError) -> str:
    """A sentence for what FastAPI's own checks refused (a missing header, a bad task name)."""
    parts = []
    for err in exc.errors():
        where, name = (list(err.get("loc", ())) + ["", ""])[:2]
        if where == "header":      # x-knowcache-dtype / x_knowcache_dtype -> X-Knowcache-Dtype
            name = "-".join(w.capitalize() for w in str(name).replace("_", "-").split("-"))
        if err.get("type") == "missing":
            parts.append(f"the {name} {where} is missing" if where == "header"
                         else f"{where} {name} is missing")
        else:
            parts.append(f"{where} {name}: {err.get('msg', 'invalid')}")
    hint = (" (send X-Knowcache-Dtype, e.g. float32, and X-Knowcache-Shape, e.g. 1,16000, "
            "with the raw tensor)" if any("X-Knowcache" in p for p in parts) else "")
    return "; ".join(parts) + hint


def create_app(config: ServeConfig, *, load_in_background: bool = True,
               report: Optional[registry.LoadReport] = None,
               compute: ComputeFactory = LocalCompute) -> FastAPI:
    """The app; ``report`` (from ``registry.load_all``) when the models are already
    loaded; ``compute``: where infer requests run (this process by default)."""
    state = _State(config, report, compute)
    # The task names documented in OpenAPI (validation stays ours, with our messages);
    # from the loaded tasks where this machine has no models folder (a Ray ingress).
    tasks = registry.task_names(config.models) or sorted(report.tasks if report else ())
    dtypes = registry.input_dtypes(config.models, report)
    TASK = Path(..., pattern=r"^[a-z0-9_-]{1,64}$", description="Task name",
                json_schema_extra={"enum": tasks} if tasks else None)

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        state.compute.start()
        if load_in_background:
            threading.Thread(target=state.load, name="knowcache-load", daemon=True).start()
        else:
            state.load()
        yield
        await state.compute.stop()

    app = FastAPI(title="knowcache cloud tier", version=__version__, lifespan=lifespan,
                  description="The full models devices fall back to, partition hints, and "
                              "partition downloads.", docs_url=None, redoc_url=None)
    app.state.knowcache = state
    _serve_docs_offline(app)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_request: Request, exc: RequestValidationError):
        return JSONResponse({"detail": _validation_problem(exc)}, 400)

    @app.middleware("http")
    async def count(request: Request, call_next):
        t0 = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        name = getattr(route, "path", "unmatched")
        state.metrics.requests.labels(name, str(response.status_code)).inc()
        state.metrics.latency.labels(name).observe(time.perf_counter() - t0)
        return response

    def authorized(authorization: Optional[str] = Header(None, description="Bearer token")):
        token = config.token
        if not token:
            return
        # RFC 7235: the scheme is case-insensitive ("bearer" is as good as "Bearer").
        scheme, _, credentials = (authorization or "").strip().partition(" ")
        if not (scheme.lower() == "bearer"
                and hmac.compare_digest(credentials.strip().encode(), token.encode())):
            raise HTTPException(401, "missing or wrong bearer token",
                                headers={"WWW-Authenticate": "Bearer"})

    def task_models(task: str) -> registry.TaskModels:
        if not state.ready.is_set():
            raise HTTPException(503, state.load_error or "models are still loading",
                                headers={"Retry-After": "1"})
        try:
            return state.tasks[task]
        except KeyError:
            raise HTTPException(404, f"unknown task {task!r}; this server has "
                                     f"{', '.join(sorted(state.tasks))}") from None

    @app.get("/healthz", tags=["ops"])
    def healthz() -> dict:
        """The process is up."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["ops"], responses={503: {"model": Problem}})
    def readyz():
        """Ready once every task's models are loaded and warmed up."""
        if state.ready.is_set():
            return {"status": "ready", "tasks": sorted(state.tasks)}
        return JSONResponse({"detail": state.load_error or "models are still loading"}, 503)

    @app.get("/metrics", tags=["ops"], response_class=PlainTextResponse)
    async def metrics():
        """Prometheus metrics (on Ray: every ingress replica's, summed)."""
        state.metrics.queue_depth.set(state.compute.depth)
        return Response(await state.compute.exposition(), media_type=CONTENT_TYPE_LATEST)

    @app.post("/v1/{task}/infer", response_model=InferAnswer, responses=ERRORS, tags=["infer"],
              dependencies=[Depends(authorized)],
              openapi_extra={"requestBody": {"required": True, "content": {
                  "application/octet-stream": {"schema": {"type": "string",
                                                          "format": "binary"}}}}})
    async def infer(request: Request, task: str = TASK,
                    x_knowcache_dtype: str = Header(..., description="Element type",
                                                    json_schema_extra={"enum": dtypes}),
                    x_knowcache_shape: str = Header(..., description="e.g. 1,16000",
                                                    json_schema_extra=SHAPE_DOC),
                    from_stage: Optional[int] = Query(
                        None, description="Split computing: the body is the staged program's "
                                          "int8 activation at this stage, which the server "
                                          "resumes from"),
                    x_knowcache_encoding: Optional[str] = Header(
                        None, description="raw (default): the tensor's own bytes; pcm16: a "
                                          "float32 tensor sent as little-endian int16 q, each "
                                          "value q / 32768 (16-bit audio, half the bytes)",
                        json_schema_extra={"enum": list(ENCODINGS)}),
                    x_knowcache_scale: Optional[str] = Header(
                        None, description="from_stage: the activation's per-tensor scale"),
                    x_knowcache_staged_version: Optional[str] = Header(
                        None, description="from_stage: the staged program version the device "
                                          "ran")):
        """Runs the full model on one input tensor (raw little-endian bytes), or resumes
        the staged program from stage ``from_stage`` on an int8 activation."""
        t0 = time.perf_counter()
        models = task_models(task)
        if from_stage is None:
            x = await _read_tensor(request, models, x_knowcache_dtype, x_knowcache_shape,
                                   config.max_body_bytes, config.body_timeout_s,
                                   x_knowcache_encoding or "raw")
        else:
            if x_knowcache_encoding not in (None, "raw"):
                raise HTTPException(400, f"X-Knowcache-Encoding {x_knowcache_encoding!r} is for "
                                         "raw inputs; a from_stage upload is the int8 activation")
            if not state.compute.resumes:
                # 404, as for a task without a staged program: nothing here resumes one
                raise HTTPException(404, "this server's back end cannot resume a staged program "
                                         "(from_stage); send the raw input, or use `knowcache "
                                         "serve` without --ray")
            try:
                staged = await asyncio.to_thread(models.staged.get)
                dims, scale = staged.check(from_stage, x_knowcache_staged_version,
                                           x_knowcache_dtype, x_knowcache_shape,
                                           x_knowcache_scale)
            except SplitRefused as e:
                raise HTTPException(e.status, e.detail) from None
            body = await _read_exact(request, int(np.prod(dims)), f"shape {dims} of int8",
                                     config.max_body_bytes, config.body_timeout_s)
            x = decode(body, dims, scale)
        try:
            answer = await asyncio.wait_for(state.compute.submit(models, x, from_stage),
                                            config.request_timeout_s)
        except QueueFull:
            raise HTTPException(429, f"server busy: {config.queue_limit} requests queued",
                                headers={"Retry-After": "1"}) from None
        except Unavailable as e:
            raise HTTPException(503, str(e), headers={"Retry-After": "1"}) from None
        except asyncio.TimeoutError:
            raise HTTPException(504, f"no answer within {config.request_timeout_s:g} s") from None
        return InferAnswer(label=answer.label, index=answer.index, confidence=answer.confidence,
                           partition_hint=answer.partition_hint, model_version=models.version,
                           server_ms=(time.perf_counter() - t0) * 1e3)

    @app.get("/v1/{task}/layer-cache", tags=["models"], responses=ERRORS,
             dependencies=[Depends(authorized)])
    async def layer_cache(task: str = TASK):
        """Online layer caching: serving version, retrains and rollbacks (on Ray, also the
        version each model replica serves)."""
        models = task_models(task)
        status = await state.compute.layer_cache(models)
        if status is None and models.not_learning:
            raise HTTPException(404, f"task {task!r} does not learn exits: its learner could "
                                     f"not start ({models.not_learning})")
        if status is None:
            raise HTTPException(404, f"task {task!r} does not learn exits; start the server "
                                     "with --learn-exits and a staged program")
        return status

    @app.get("/v1/{task}/manifest", tags=["models"], responses=ERRORS,
             dependencies=[Depends(authorized)])
    def manifest(task: str = TASK):
        """The task's manifest.json (schema: runtime_cpp/include/knowcache/manifest.h),
        byte for byte; when it is signed, header X-Knowcache-Signature carries its
        detached signature (docs/security.md)."""
        served = task_models(task).served_manifest
        headers = {signing.HEADER: served.signature} if served.signature else None
        return Response(served.text, media_type="application/json", headers=headers)

    @app.get("/v1/{task}/manifest.sig", tags=["models"], responses=ERRORS,
             dependencies=[Depends(authorized)], response_class=PlainTextResponse)
    def manifest_signature(task: str = TASK):
        """The manifest's detached Ed25519 signature (one JSON line: alg, key_id,
        signature); 404 when the task's manifest is unsigned."""
        served = task_models(task).served_manifest
        if not served.signature:
            raise HTTPException(404, f"task {task!r} serves an unsigned manifest; sign it with "
                                     "`knowcache keys sign`")
        return PlainTextResponse(served.signature + "\n")

    @app.get("/v1/{task}/partitions/{partition_id}", tags=["models"], responses={
        **ERRORS, 200: {"content": {"application/octet-stream": {}}}, 304: {}},
        dependencies=[Depends(authorized)], response_class=Response)
    def partition(task: str = TASK, partition_id: str = PARTITION,
                  if_none_match: Optional[str] = Header(None)):
        """A partition's ExecuTorch program; ETag is the sha256 of the bytes served."""
        models = task_models(task)
        info = models.manifest.find(partition_id)
        if info is None:
            raise HTTPException(404, f"task {task!r} has no partition {partition_id!r}; it has "
                                     f"{', '.join(p.id for p in models.manifest.partitions)}")
        served = models.files.get(partition_id)
        if served is None:
            raise HTTPException(503, f"partition {partition_id!r} is not served: "
                                     f"{models.refused_files.get(partition_id, 'not loaded')}")
        etag = f'"{served.sha256}"'
        if if_none_match and etag in [t.strip() for t in if_none_match.split(",")]:
            state.metrics.not_modified.labels(task, partition_id).inc()
            return Response(status_code=304, headers={"ETag": etag})
        state.metrics.downloads.labels(task, partition_id).inc()
        return Response(served.data, media_type="application/octet-stream",
                        headers={"ETag": etag})

    return app


def _serve_docs_offline(app: FastAPI) -> None:
    """Swagger UI at /docs from the swagger-ui-bundle package: FastAPI's default loads it
    from a CDN, which leaves /docs blank on a machine without internet access."""
    import swagger_ui_bundle
    from fastapi.openapi.docs import get_swagger_ui_html
    from fastapi.staticfiles import StaticFiles

    app.mount("/static/swagger", StaticFiles(directory=swagger_ui_bundle.swagger_ui_path),
              name="swagger")

    @app.get("/docs", include_in_schema=False)
    def docs():
        return get_swagger_ui_html(openapi_url=app.openapi_url, title=f"{app.title} API",
                                   swagger_js_url="/static/swagger/swagger-ui-bundle.js",
                                   swagger_css_url="/static/swagger/swagger-ui.css",
                                   swagger_favicon_url="/static/swagger/favicon-32x32.png")


async def _read_body(request: Request, limit: int) -> bytes:
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise HTTPException(413, f"body over the {limit}-byte limit")
    return bytes(body)


async def _read_tensor(request: Request, models: registry.TaskModels, dtype: str, shape: str,
                       limit: int, timeout_s: float, encoding: str = "raw") -> np.ndarray:
    """Checks dtype, shape and length against the task's input spec, then values.
    ``encoding`` pcm16: the float32 tensor came as int16 q, each value q / 32768."""
    if encoding not in ENCODINGS:
        raise HTTPException(400, f"X-Knowcache-Encoding is {encoding!r}; send raw (the tensor's "
                                 "bytes) or pcm16 (a float32 tensor as little-endian int16, "
                                 "each value q / 32768)")
    if encoding == "pcm16" and dtype != "float32":
        raise HTTPException(400, f"X-Knowcache-Encoding pcm16 carries a float32 tensor, not "
                                 f"{dtype}")
    if dtype != models.dtype:
        raise HTTPException(400, f"X-Knowcache-Dtype is {dtype!r}; task {models.name!r} takes "
                                 f"{models.dtype}")
    try:
        dims = parse_shape_header(shape)
    except ValueError as e:
        raise HTTPException(400, str(e)) from None
    if dims != models.shape:
        raise HTTPException(400, f"shape {dims} does not match task {models.name!r}'s input "
                                 f"{models.shape}")
    if encoding == "pcm16":
        body = await _read_exact(request, 2 * int(np.prod(dims)), f"shape {dims} as pcm16",
                                 limit, timeout_s)
        x = (np.frombuffer(body, dtype="<i2").astype(np.float32)
             * np.float32(PCM16_STEP)).reshape(dims)          # a power of two: exact
    else:
        body = await _read_exact(request, models.input_bytes, f"shape {dims} of {dtype}", limit,
                                 timeout_s)
        x = np.frombuffer(body, dtype=np.dtype(registry.DTYPES[dtype]).newbyteorder("<"))
        x = x.astype(registry.DTYPES[dtype]).reshape(dims)
    if x.dtype.kind == "f" and not np.isfinite(x).all():
        first = int(np.flatnonzero(~np.isfinite(x.reshape(-1)))[0])
        raise HTTPException(400, f"input holds NaN or infinite values (first at element "
                                 f"{first}); the models take finite numbers")
    try:
        models.input.check(x)        # the engine's own check: a value outside value_range
    except ValueError as e:
        raise HTTPException(400, f"task {models.name!r}: {e}") from None
    return x


async def _read_exact(request: Request, expected: int, what: str, limit: int,
                      timeout_s: float) -> bytes:
    """The body, which must be ``expected`` bytes (``what``: the tensor it holds)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > min(limit, expected):
        raise HTTPException(413 if int(declared) > limit else 400,
                            f"body is {declared} bytes; {what} is {expected}")
    try:
        # A client that sends less than its Content-Length must not hold the request open.
        body = await asyncio.wait_for(_read_body(request, limit), timeout_s)
    except asyncio.TimeoutError:
        raise HTTPException(408, f"the body did not arrive within {timeout_s:g} s "
                                 f"({declared or 'no'} bytes declared)") from None
    except ClientDisconnect:
        _log.info("client closed the connection before its body arrived")
        raise HTTPException(400, "the client closed the connection before its body "
                                 "arrived") from None
    if len(body) != expected:
        raise HTTPException(400, f"body is {len(body)} bytes; {what} is {expected}")
    return body


__all__ = ["create_app"]
