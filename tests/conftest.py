# Copyright 2026 The metagan_hub developers. Licensed under the Apache License, Version 2.0.
"""
Shared pytest fixtures.

Tests never touch the internet. Hub round trips go to a loopback fake Hub (`tests/hub_server.py`). `huggingface_hub`
(and diffusers, which copies some of its constants) read `HF_ENDPOINT`, `HF_HOME`, `HF_HUB_OFFLINE`,
`HF_HUB_DISABLE_XET`, ... once, *at import*: `huggingface_hub.constants.ENDPOINT`, the module-level `HfApi()` behind
`huggingface_hub.upload_folder`/`create_repo`/..., `HUGGINGFACE_CO_URL_TEMPLATE` and the trusted-host list all keep
the value they saw then, so patching `constants.ENDPOINT` afterwards is not enough. This file is imported before any
test module, so it binds the server's port first and sets the environment below before anything imports
`huggingface_hub`. The variables also reach subprocesses (e.g. `accelerate launch` tests).

Fixtures (see `tests/hub/test_hub_server.py` for examples):

- `hub_server` (session): the running `HubServer`; inspect `commits(repo_id)`, `requests`, `fail_next(...)`, ...
  Its request log and injected failures are cleared before every test.
- `hub_repo_id` (function): a fresh `"user/<test-name>-<n>"` repo id, so tests sharing the server never collide.
- `hf_cache` (function): a fresh, empty Hugging Face home for the test; returns the hub cache folder.
- `hub_offline` (function): a switch, `hub_offline()` / `hub_offline(False)`, for `HF_HUB_OFFLINE`; undone after the
  test.

Fixtures for tiny models, used by whole test modules with `pytestmark = pytest.mark.usefixtures(...)`:

- `one_torch_thread` (module): one torch intra-op thread while the module runs.
- `fresh_accelerate` (function): one thread and no process-wide Accelerate state before or after the test, for
  in-process script runs that each create their own `Accelerator`.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from itertools import count
from pathlib import Path

import pytest

from tests.hub_server import HubServer, set_hub_offline, use_hf_home

# --- Done at import, before any test module imports huggingface_hub / diffusers ------------------------------------

if "huggingface_hub" in sys.modules:  # e.g. imported by a pytest plugin: its endpoint is already frozen
    raise RuntimeError("tests/conftest.py must run before huggingface_hub is imported (it sets HF_ENDPOINT).")

_HUB = HubServer()  # binds 127.0.0.1 on a free port now; served by the `hub_server` fixture
_SESSION_HF_HOME = tempfile.mkdtemp(prefix="metagan-hub-tests-hf-home-")  # never the user's real cache or token

for _name in ("HUGGINGFACE_CO_STAGING", "HUGGING_FACE_HUB_TOKEN", "TRANSFORMERS_OFFLINE", "HF_TOKEN_PATH"):
    os.environ.pop(_name, None)
os.environ.update(
    HF_ENDPOINT=_HUB.url,
    HF_TOKEN="hf_metaganhubtestsdummytoken",  # the fake Hub accepts any bearer token
    HF_HOME=_SESSION_HF_HOME,
    HF_HUB_CACHE=os.path.join(_SESSION_HF_HOME, "hub"),
    HF_HUB_OFFLINE="0",  # tests switch it with the `hub_offline` fixture
    HF_HUB_DISABLE_TELEMETRY="1",
    HF_HUB_DISABLE_XET="1",  # regular uploads/downloads only: the fake Hub does not speak the Xet protocol
    HF_HUB_DISABLE_PROGRESS_BARS="1",
    METAGAN_HUB_CACHE=os.path.join(_SESSION_HF_HOME, "metagan_hub_cache"),  # dataset renders: never ~/.cache
)


def pytest_unconfigure(config: pytest.Config) -> None:
    """Close the fake Hub's socket and remove the session's Hugging Face home (and the render cache inside it)."""
    _HUB.stop()
    shutil.rmtree(_SESSION_HF_HOME, ignore_errors=True)


# --- Hub fixtures ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def hub_server() -> Iterator[HubServer]:
    """The loopback fake Hub that `huggingface_hub` and diffusers talk to (`HF_ENDPOINT`), running in a thread."""
    _HUB.start()
    yield _HUB
    _HUB.stop()


@pytest.fixture(autouse=True)
def _reset_hub_server_log() -> None:
    """Start each test with an empty request log and no injected failures (stored repositories are kept)."""
    _HUB.reset()


_repo_counter = count()


@pytest.fixture
def hub_repo_id(request: pytest.FixtureRequest) -> str:
    """A repo id no other test uses, like `"user/test-push-roundtrip-3"`."""
    name = re.sub(r"[^A-Za-z0-9]+", "-", request.node.name).strip("-").lower()[:60]
    return f"{_HUB.user}/{name}-{next(_repo_counter)}"


@pytest.fixture
def hf_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh, empty `HF_HOME` for this test (environment and `huggingface_hub.constants`); returns `HF_HUB_CACHE`."""
    return use_hf_home(monkeypatch, tmp_path / "hf_home")


@pytest.fixture
def hub_offline(monkeypatch: pytest.MonkeyPatch) -> Callable[[bool], None]:
    """A switch for offline mode: call `hub_offline()` to go offline, `hub_offline(False)` to go back online."""

    def switch(enabled: bool = True) -> None:
        set_hub_offline(monkeypatch, enabled)

    return switch


# --- Tiny models: one thread, fresh Accelerate state -------------------------------------------------------------


@pytest.fixture(scope="module")
def one_torch_thread() -> Iterator[None]:
    """Tiny models gain nothing from intra-op threads, and on a busy 2-core machine spinning OpenMP workers make
    every step an order of magnitude slower."""
    import torch  # not at import of this file: see the top

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def fresh_accelerate() -> Iterator[None]:
    from tests.testing_utils import one_thread_fresh_accelerate

    with one_thread_fresh_accelerate():
        yield
