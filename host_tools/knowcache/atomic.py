"""Writing a file so a reader never sees half of it: write a sibling, then rename."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable


def replace_atomically(path: str | os.PathLike, write: Callable[[Path], None],
                       suffix: str = ".tmp") -> Path:
    """Calls ``write(tmp)`` for a sibling ``tmp`` of ``path``, then renames it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + suffix)
    write(tmp)
    os.replace(tmp, path)
    return path
