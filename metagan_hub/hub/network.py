# Copyright 2026 The metagan_hub developers. Licensed under the Apache License, Version 2.0.
"""Bounded waits for every Hub request metagan_hub makes, and the network errors they can end in."""

from __future__ import annotations

import contextlib
import logging
import math
import os
import threading
from collections.abc import Iterator

logger = logging.getLogger(__name__)

TIMEOUT_ENV = "METAGAN_HUB_TIMEOUT"
DEFAULT_TIMEOUT = 60.0

try:  # huggingface_hub >= 1.0 talks through httpx (packaged as `httpx2` by huggingface_hub 2.x)
    import httpx2 as _httpx
except ImportError:  # pragma: no cover - depends on the installed huggingface_hub
    import httpx as _httpx

#: Connection refused, dropped connections, protocol errors and timeouts (not HTTP error answers).
NETWORK_ERRORS: tuple[type[BaseException], ...] = (_httpx.TransportError,)
_LOCK = threading.Lock()


def resolve_timeout(timeout: float | None = None) -> float:
    """
    The longest wait, in seconds, for any single Hub request: `timeout` when given, else the `METAGAN_HUB_TIMEOUT`
    environment variable, else 60 s. Must be a finite number > 0.

    Example:

    ```py
    >>> from metagan_hub.hub.network import resolve_timeout

    >>> resolve_timeout(5)
    5.0
    ```
    """
    source = "`timeout`"
    if timeout is None:
        raw = os.environ.get(TIMEOUT_ENV)
        if raw is None or not raw.strip():
            return DEFAULT_TIMEOUT
        source = f"the environment variable {TIMEOUT_ENV}"
        try:
            timeout = float(raw)
        except ValueError:
            raise ValueError(f"{source} must be a number of seconds > 0, got {raw!r}.") from None
    if isinstance(timeout, bool) or not isinstance(timeout, int | float):
        raise ValueError(f"{source} must be a number of seconds > 0, got {timeout!r}.")
    if not math.isfinite(timeout) or timeout <= 0:
        raise ValueError(f"{source} must be a finite number of seconds > 0, got {timeout!r}.")
    return float(timeout)


@contextlib.contextmanager
def bounded_hub_requests(timeout: float | None = None) -> Iterator[float]:
    """
    Context manager: inside it, every request of `huggingface_hub`'s shared HTTP client (repo creation, commits,
    repo info, downloads, ...) waits at most `timeout` seconds (see [`resolve_timeout`]), or less where the call
    sets a shorter limit of its own, to connect, send, or receive each part of the answer, and then raises an `httpx`
    timeout error. Contexts nest. Yields the timeout.

    huggingface_hub 2.x creates its client with no timeout at all; its downloads already pass their own
    (`HF_HUB_DOWNLOAD_TIMEOUT`, `HF_HUB_ETAG_TIMEOUT`, 10 s by default).

    Example:

    ```py
    >>> from metagan_hub.hub.network import bounded_hub_requests

    >>> with bounded_hub_requests(30) as seconds:
    ...     seconds
    30.0
    ```
    """
    seconds = resolve_timeout(timeout)
    from huggingface_hub.utils import get_session

    session = get_session()
    bounded = _httpx.Timeout(seconds).as_dict()
    original_send = type(session).send

    def send(request, *args, **kwargs):
        # some huggingface_hub calls pass `timeout=None` explicitly (e.g. `repo_info`), which disables the client's
        # default: every phase waits at most `seconds`, or less where the call asked for less
        current = dict(request.extensions.get("timeout") or {})
        request.extensions["timeout"] = {
            k: bounded[k] if current.get(k) is None else min(current[k], bounded[k]) for k in bounded
        }
        return original_send(session, request, *args, **kwargs)

    with _LOCK:
        previous = session.timeout
        previous_send = session.__dict__.get("send")  # an enclosing bounded_hub_requests (nesting restores it)
        session.timeout = _httpx.Timeout(seconds)
        session.send = send
    try:
        yield seconds
    finally:
        with _LOCK:
            session.timeout = previous
            if previous_send is None:
                session.__dict__.pop("send", None)
            else:
                session.send = previous_send


def describe_network_error(err: BaseException, timeout: float) -> str:
    """One sentence on what a network error means for the user (timeout, refused, dropped)."""
    if isinstance(err, _httpx.TimeoutException):
        return (
            f"the Hub did not answer within {timeout:g} s ({type(err).__name__}); raise the limit with `timeout=` or "
            f"the {TIMEOUT_ENV} environment variable if your connection is slow"
        )
    if isinstance(err, _httpx.ConnectError):
        return f"could not connect to the Hub ({type(err).__name__}: {err}); check the network, proxy and HF_ENDPOINT"
    return f"the connection to the Hub broke ({type(err).__name__}: {err})"


def find_network_error(err: BaseException | None) -> BaseException | None:
    """The network error (see `NETWORK_ERRORS`) behind `err`, following `__cause__` / `__context__`; else `None`."""
    seen = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, NETWORK_ERRORS):
            return err
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None
