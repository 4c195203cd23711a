# Copyright 2026 The metagan_hub developers. Licensed under the Apache License, Version 2.0.
"""On-disk cache of rendered datasets.

Rendered arrays are stored as uncompressed `.npz` files under the cache directory, named by a hash of every
parameter that affects the pixels, so changing any render option renders anew and the same options load instantly.
Files are written to a temporary file in the same folder and moved into place with `os.replace`, so a reader
never sees a half-written file; a damaged file is treated as a cache miss and rewritten.

The cache directory is, in order of precedence: the `cache_dir` argument, the `METAGAN_HUB_CACHE` environment
variable, or `~/.cache/metagan_hub`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

CACHE_ENV = "METAGAN_HUB_CACHE"
CACHE_FORMAT_VERSION = 1


def resolve_cache_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    """
    The cache directory: `cache_dir` if given, else `$METAGAN_HUB_CACHE`, else `~/.cache/metagan_hub`.

    Example:

    ```py
    >>> from metagan_hub.data.cache import resolve_cache_dir
    >>> str(resolve_cache_dir("/tmp/my_cache"))
    '/tmp/my_cache'
    ```
    """
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "metagan_hub"


def cache_key(params: dict) -> str:
    """A stable hash (24 hex digits) of JSON-serializable render parameters."""
    payload = json.dumps({"format": CACHE_FORMAT_VERSION, **params}, sort_keys=True, ensure_ascii=True, default=str)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:24]


def save_arrays(path: str | os.PathLike, **arrays: np.ndarray) -> None:
    """Write `arrays` to the `.npz` file `path` atomically (temporary file + `os.replace`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def load_arrays(path: str | os.PathLike) -> dict[str, np.ndarray] | None:
    """Read an `.npz` file written by [`save_arrays`]; `None` if it is missing or unreadable (with a warning)."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as err:
        logger.warning("ignoring unreadable cache file %s (%s); it will be rebuilt", path, err)
        return None
