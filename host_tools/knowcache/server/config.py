"""Settings of `knowcache serve`, one struct."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Optional

if TYPE_CHECKING:      # torch is imported only when exits are learned
    from knowcache.layer_cache.online import OnlineConfig

TOKEN_ENV = "KNOWCACHE_TOKEN"


@dataclass
class ServeConfig:
    models: Path = Path("models")
    # bearer token; None: no auth. Kept out of repr() so that it is never logged.
    token: Optional[str] = field(default=None, repr=False)
    batching: bool = True
    max_batch: int = 32                    # requests run together at most
    max_wait_ms: float = 2.0               # how long the first request of a batch waits for company
    queue_limit: int = 256                 # queued requests before 429
    request_timeout_s: float = 10.0        # per infer request, queueing included (504 after)
    max_body_bytes: int = 8 << 20          # 413 above this, before reading the body
    body_timeout_s: float = 10.0           # 408 when the body takes longer to arrive
    learn_exits: bool = False              # layer caching: learn the staged program's exits online
    online: Optional["OnlineConfig"] = None  # the learner's settings; None: OnlineConfig()

    def __post_init__(self) -> None:
        self.models = Path(self.models)
        if self.token is None:
            self.token = os.environ.get(TOKEN_ENV) or None
        if self.max_batch < 1 or self.queue_limit < 1:
            raise ValueError("max_batch and queue_limit must be at least 1")
        if self.max_wait_ms < 0 or self.request_timeout_s <= 0:
            raise ValueError("max_wait_ms must be >= 0 and request_timeout_s > 0")
