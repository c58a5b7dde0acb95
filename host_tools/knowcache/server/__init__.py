"""The cloud tier: `knowcache serve`, the HTTP server devices fall back to."""

from knowcache.server.app import create_app  # noqa: F401
from knowcache.server.config import ServeConfig  # noqa: F401
