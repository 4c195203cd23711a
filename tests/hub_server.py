# Copyright 2026 The metagan_hub developers. Licensed under the Apache License, Version 2.0.
"""
A loopback, in-memory fake of the Hugging Face Hub HTTP API, for tests that must never touch the internet.

It serves the subset of the Hub API that `huggingface_hub` (2.x) uses for real round trips with the regular (non-LFS,
non-Xet) upload protocol: repository creation and deletion, README metadata validation, "preupload" (which always
answers `uploadMode: "regular"`, so file contents travel base64-encoded inside the NDJSON commit), commits, repository
info, tree listings (recursive or not, paginated), paths-info, commit history and `resolve` downloads with the
`X-Repo-Commit` and `ETag` headers that `hf_hub_download` needs.

Every commit gets a new 40-hex sha; branches (`main`, and `refs/pr/N` for pull requests) point to their newest commit
and every older commit stays resolvable by its sha. Repositories are only stored in memory.

Tests can:

- inspect what was pushed: `commits(repo_id)`, `uploaded_paths(repo_id)`, `files(repo_id, revision)`, `head(repo_id)`;
- count requests: `requests` (a list of `RequestRecord`) and `request_count(endpoint, method=...)`;
- inject failures: `fail_next("commit", times=1, status=500)` answers the next matching requests with an error before
  they touch any state (a failed upload mid-push); `drop_next("commit")` closes the connection without any answer (a
  connection dropped mid-commit); `stall_next("commit")` accepts the request and never answers (a Hub that hangs)
  until `release_stalled()`, `reset()` or `stop()`;
- take the server down and bring it back on the same port: `with server.down(): ...`;
- seed repositories without HTTP: `create_repo(repo_id)` and `add_commit(repo_id, {"path": b"bytes"})`.

Only the Python standard library is used (PyYAML is used to check README metadata when it is importable, as it is
wherever `huggingface_hub` is installed).

Example:

```py
>>> server = HubServer()
>>> server.start()
>>> server.url  # doctest: +SKIP
'http://127.0.0.1:54321'
>>> server.stop()
```
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import itertools
import json
import os
import re
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, quote, unquote, urlencode, urlsplit

if TYPE_CHECKING:
    import pytest

__all__ = ["CommitRecord", "HubServer", "RequestRecord", "git_blob_sha1", "set_hub_offline", "use_hf_home"]

# Plural form used in `/api/{type}s/...` routes -> repo type, and repo type -> prefix used in `resolve` URLs.
_API_REPO_TYPES = {"models": "model", "datasets": "dataset", "spaces": "space"}
_URL_PREFIXES = {"model": "", "dataset": "datasets/", "space": "spaces/"}
_SHA_RE = re.compile(r"[0-9a-f]{40}")
_DEFAULT_GITATTRIBUTES = (
    b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n*.bin filter=lfs diff=lfs merge=lfs -text\n"
)

# Endpoint names used by `RequestRecord.endpoint`, `request_count` and `fail_next`.
ENDPOINTS = (
    "whoami",
    "create",
    "delete",
    "validate-yaml",
    "info",
    "tree",
    "paths-info",
    "commits",
    "preupload",
    "commit",
    "resolve",
    "other",
)


def git_blob_sha1(data: bytes) -> str:
    """Return the git blob id of `data` (what the Hub reports as a regular file's `oid`/`blobId`/`ETag`)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _iso(moment: datetime) -> str:
    """Format a datetime the way the Hub does (`2024-01-31T12:00:00.000Z`)."""
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


@dataclass(frozen=True)
class RequestRecord:
    """One request the server answered.

    Attributes:
        method: the HTTP method (`"GET"`, `"HEAD"`, `"POST"`, `"DELETE"`).
        path: the request path, without the query string (still URL-quoted).
        endpoint: one of `ENDPOINTS` (`"commit"`, `"preupload"`, `"resolve"`, ...).
        repo_id: the repository the request is about, when there is one.
        status: the HTTP status code of the answer (0 when the connection was dropped or stalled without one).
        injected: whether the answer came from `fail_next`.
        paths: for `preupload` and `commit` requests, the repository paths in the request body (also for requests
            that failed), in request order; empty otherwise.
    """

    method: str
    path: str
    endpoint: str
    repo_id: str | None
    status: int
    injected: bool = False
    paths: tuple[str, ...] = ()


@dataclass
class CommitRecord:
    """One commit of a repository.

    Attributes:
        sha: the 40-hex commit id.
        parent: the parent commit id (`None` for the first commit).
        branch: the branch the commit was made on (`"main"` or `"refs/pr/N"`).
        title: the commit summary.
        message: the commit description.
        date: when the commit was made (UTC).
        tree: the full file listing after the commit, as `{path: git blob sha1}`.
        added: paths written by this commit (new or overwritten), in request order.
        deleted: paths removed by this commit.
    """

    sha: str
    parent: str | None
    branch: str
    title: str
    message: str
    date: datetime
    tree: dict[str, str]
    added: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)


@dataclass
class _Repo:
    repo_id: str
    repo_type: str
    private: bool
    created_at: datetime
    branches: dict[str, str] = field(default_factory=dict)
    commits: dict[str, CommitRecord] = field(default_factory=dict)
    history: list[CommitRecord] = field(default_factory=list)
    num_prs: int = 0


@dataclass
class _Failure:
    endpoint: str
    remaining: int
    status: int
    message: str
    repo_id: str | None
    mode: str = "status"  # "status": answer `status`; "drop": close without answering; "stall": never answer
    max_seconds: float = 60.0  # "stall": give up (and close) after this long at the latest


class _DropConnection(Exception):
    """Raised inside a request to close the connection without sending any answer."""


class _HubError(Exception):
    """An error answer: HTTP status, message and the `X-Error-Code` header `huggingface_hub` maps to exceptions."""

    def __init__(
        self, status: int, message: str, error_code: str | None = None, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.error_code = error_code
        self.headers = headers or {}


@dataclass
class _Response:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def json(cls, payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> _Response:
        return cls(status, json.dumps(payload).encode(), {"Content-Type": "application/json", **(headers or {})})


class HubServer:
    """An in-memory Hugging Face Hub served over HTTP on the loopback interface.

    The listening socket is bound on construction (so `url` is known before `start()`), and `start()` serves it from
    a background thread. All public methods are thread-safe.

    Args:
        host: the interface to bind; only loopback addresses make sense for tests.
        port: the port to bind (`0` picks a free one).
        user: the name `whoami` reports; repositories created without a namespace go under it.
        require_token: answer write requests and `whoami` without an `Authorization` header with 401, like the Hub.
        initial_gitattributes: give each new repository a first commit with a `.gitattributes` file, like the Hub.
        tree_page_size: entries per page of tree listings (the Hub uses 1000, and 50 with `expand=True`).
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        user: str = "user",
        require_token: bool = True,
        initial_gitattributes: bool = True,
        tree_page_size: int = 1000,
    ) -> None:
        self.host = host
        self.user = user
        self.require_token = require_token
        self.initial_gitattributes = initial_gitattributes
        self.tree_page_size = tree_page_size
        self._lock = threading.RLock()
        self._repos: dict[tuple[str, str], _Repo] = {}
        self._blobs: dict[str, bytes] = {}
        self._failures: list[_Failure] = []
        self._release = threading.Event()
        self._requests: list[RequestRecord] = []
        self._counter = itertools.count()
        self._thread: threading.Thread | None = None
        self._httpd: ThreadingHTTPServer | None = self._bind(port)
        self.port: int = self._httpd.server_address[1]

    # ----------------------------------------------------------------------------------------------------------------
    # Lifecycle
    # ----------------------------------------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The endpoint to give `huggingface_hub` (`HF_ENDPOINT`), e.g. `http://127.0.0.1:54321`."""
        return f"http://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        """Whether the server is currently answering requests."""
        return self._thread is not None and self._thread.is_alive()

    def _bind(self, port: int) -> ThreadingHTTPServer:
        handler = type("_BoundHubHandler", (_HubRequestHandler,), {"hub": self})
        return _ThreadingServer((self.host, port), handler)

    def start(self) -> None:
        """Serve requests from a background thread (re-binding the same port if the server was stopped)."""
        with self._lock:
            if self.running:
                return
            if self._httpd is None:
                self._httpd = self._bind(self.port)
            self._thread = threading.Thread(
                target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="hub-server", daemon=True
            )
            self._thread.start()

    def stop(self) -> None:
        """Stop serving and close the listening socket; stored repositories are kept. Idempotent."""
        self.release_stalled()
        with self._lock:
            httpd, thread = self._httpd, self._thread
            self._httpd, self._thread = None, None
        if httpd is not None:
            if thread is not None:
                httpd.shutdown()
            httpd.server_close()
        if thread is not None:
            thread.join(timeout=5)

    @contextlib.contextmanager
    def down(self) -> Iterator[None]:
        """Context manager: the server is unreachable (connections refused) inside, and serves again after."""
        self.stop()
        try:
            yield
        finally:
            self.start()

    def __enter__(self) -> HubServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # ----------------------------------------------------------------------------------------------------------------
    # Test-facing API: failure injection, request log, inspection, seeding
    # ----------------------------------------------------------------------------------------------------------------

    def fail_next(
        self,
        endpoint: str = "commit",
        times: int = 1,
        *,
        status: int = 500,
        message: str = "Injected failure",
        repo_id: str | None = None,
    ) -> None:
        """Answer the next `times` requests to `endpoint` with HTTP `status`, before they change any state.

        Args:
            endpoint: one of `ENDPOINTS` (`"commit"`, `"preupload"`, `"resolve"`, ...), or `"*"` for any request.
            times: how many requests fail.
            status: the HTTP status to answer. Note that `huggingface_hub` retries 429/500/502/503/504 answers to
                some endpoints (preupload, tree, `get_hf_file_metadata(retry_on_errors=True)`) up to 5 times with
                1, 2, 4, 8, 8 s waits, while the commit endpoint is never retried. To make a preupload fail fast, use
                a non-retried status such as 400 or 403, or a single retryable failure that the client recovers from.
            message: the error message (sent as `X-Error-Message` and in the JSON body).
            repo_id: only fail requests about this repository.
        """
        if endpoint != "*" and endpoint not in ENDPOINTS:
            raise ValueError(f"Unknown endpoint {endpoint!r}; expected '*' or one of {ENDPOINTS}.")
        if times < 1:
            raise ValueError("`times` must be at least 1.")
        with self._lock:
            self._failures.append(_Failure(endpoint, times, status, message, repo_id))

    def drop_next(self, endpoint: str = "commit", times: int = 1, *, repo_id: str | None = None) -> None:
        """Close the connection of the next `times` requests to `endpoint` after reading them, without sending any
        answer (the client sees "Server disconnected without sending a response"), before they change any state."""
        self.fail_next(endpoint, times, repo_id=repo_id)
        with self._lock:
            self._failures[-1].mode = "drop"

    def stall_next(
        self, endpoint: str = "commit", times: int = 1, *, repo_id: str | None = None, max_seconds: float = 60.0
    ) -> None:
        """Accept the next `times` requests to `endpoint` and never answer them: each waits until
        `release_stalled()`, `reset()` or `stop()` (at most `max_seconds`), then its connection is closed without an
        answer and without any change of state. Models a Hub that hangs after accepting a request."""
        self.fail_next(endpoint, times, repo_id=repo_id)
        with self._lock:
            self._failures[-1].mode = "stall"
            self._failures[-1].max_seconds = max_seconds

    def release_stalled(self) -> None:
        """Let every request held by `stall_next` end (their connections close without an answer)."""
        with self._lock:
            release, self._release = self._release, threading.Event()
        release.set()

    def clear_failures(self) -> None:
        """Forget failures injected with `fail_next`, `drop_next` or `stall_next` that have not been used yet, and
        release stalled requests."""
        with self._lock:
            self._failures.clear()
        self.release_stalled()

    @property
    def pending_failures(self) -> int:
        """How many injected failures are still waiting for a request."""
        with self._lock:
            return sum(failure.remaining for failure in self._failures)

    @property
    def requests(self) -> list[RequestRecord]:
        """A copy of the request log, oldest first."""
        with self._lock:
            return list(self._requests)

    def clear_requests(self) -> None:
        """Empty the request log."""
        with self._lock:
            self._requests.clear()

    def request_count(
        self, endpoint: str | None = None, *, method: str | None = None, repo_id: str | None = None
    ) -> int:
        """Count logged requests, optionally only those to `endpoint`, with `method`, or about `repo_id`."""
        return sum(
            1
            for record in self.requests
            if (endpoint is None or record.endpoint == endpoint)
            and (method is None or record.method == method.upper())
            and (repo_id is None or record.repo_id == repo_id)
        )

    def reset(self) -> None:
        """Clear the request log and pending failures (stored repositories are kept)."""
        self.clear_failures()
        self.clear_requests()

    def repo_exists(self, repo_id: str, repo_type: str = "model") -> bool:
        """Whether a repository exists on the server."""
        with self._lock:
            return (repo_type, repo_id) in self._repos

    def commits(self, repo_id: str, repo_type: str = "model") -> list[CommitRecord]:
        """All commits of a repository, oldest first (including the initial `.gitattributes` commit, if any)."""
        with self._lock:
            return list(self._get_repo(repo_type, repo_id).history)

    def head(self, repo_id: str, revision: str = "main", repo_type: str = "model") -> str:
        """The commit sha a branch (or sha) resolves to."""
        with self._lock:
            return self._resolve(self._get_repo(repo_type, repo_id), revision).sha

    def files(self, repo_id: str, revision: str = "main", repo_type: str = "model") -> dict[str, bytes]:
        """The full content of a repository at `revision`, as `{path: bytes}`."""
        with self._lock:
            commit = self._resolve(self._get_repo(repo_type, repo_id), revision)
            return {path: self._blobs[blob] for path, blob in sorted(commit.tree.items())}

    def uploaded_paths(self, repo_id: str, repo_type: str = "model") -> set[str]:
        """Every path any commit of the repository ever wrote (useful to assert what was *never* uploaded)."""
        return {path for commit in self.commits(repo_id, repo_type) for path in commit.added}

    def attempted_paths(self, repo_id: str, endpoint: str = "commit") -> set[str]:
        """Every path named in any `commit` (or `preupload`) request about `repo_id`, including failed ones."""
        return {
            path
            for record in self.requests
            if record.repo_id == repo_id and record.endpoint == endpoint
            for path in record.paths
        }

    def create_repo(self, repo_id: str, repo_type: str = "model", *, private: bool = False) -> None:
        """Create a repository directly (no HTTP); a no-op if it exists."""
        with self._lock:
            if (repo_type, repo_id) not in self._repos:
                self._new_repo(repo_type, repo_id, private)

    def add_commit(
        self,
        repo_id: str,
        files: dict[str, bytes],
        *,
        deleted: list[str] | None = None,
        message: str = "Seed commit",
        branch: str = "main",
        repo_type: str = "model",
    ) -> str:
        """Commit `files` (and deletions) to a repository directly, creating it if needed; returns the new sha."""
        with self._lock:
            if (repo_type, repo_id) not in self._repos:
                self._new_repo(repo_type, repo_id, private=False)
            repo = self._get_repo(repo_type, repo_id)
            if branch not in repo.branches:
                repo.branches[branch] = repo.branches["main"]
            return self._commit(repo, branch, message, "", dict(files), list(deleted or []), []).sha

    # ----------------------------------------------------------------------------------------------------------------
    # Storage (callers hold the lock)
    # ----------------------------------------------------------------------------------------------------------------

    def _get_repo(self, repo_type: str, repo_id: str) -> _Repo:
        repo = self._repos.get((repo_type, repo_id))
        if repo is None:
            raise _HubError(404, f"Repository {repo_id!r} not found", "RepoNotFound")
        return repo

    def _new_repo(self, repo_type: str, repo_id: str, private: bool) -> _Repo:
        repo = _Repo(repo_id, repo_type, private, datetime.now(timezone.utc))
        self._repos[(repo_type, repo_id)] = repo
        files = {".gitattributes": _DEFAULT_GITATTRIBUTES} if self.initial_gitattributes else {}
        self._commit(repo, "main", "initial commit", "", files, [], [])
        return repo

    def _resolve(self, repo: _Repo, revision: str) -> CommitRecord:
        if revision in repo.branches:
            return repo.commits[repo.branches[revision]]
        if revision in repo.commits:
            return repo.commits[revision]
        raise _HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")

    def _commit(
        self,
        repo: _Repo,
        branch: str,
        title: str,
        message: str,
        added: dict[str, bytes],
        deleted_files: list[str],
        deleted_folders: list[str],
    ) -> CommitRecord:
        parent_sha = repo.branches.get(branch)
        tree = dict(repo.commits[parent_sha].tree) if parent_sha is not None else {}
        for path in deleted_files:
            if path not in tree:
                raise _HubError(404, f"A file with this name doesn't exist: {path}", "EntryNotFound")
            del tree[path]
        for folder in deleted_folders:
            prefix = folder.rstrip("/") + "/"
            matching = [path for path in tree if path.startswith(prefix)]
            if not matching:
                raise _HubError(404, f"A folder with this name doesn't exist: {folder}", "EntryNotFound")
            for path in matching:
                del tree[path]
        for path, content in added.items():
            blob = git_blob_sha1(content)
            self._blobs[blob] = content
            tree[path] = blob
        seed = f"{repo.repo_type}/{repo.repo_id}\n{parent_sha}\n{branch}\n{title}\n{next(self._counter)}"
        sha = hashlib.sha1(seed.encode() + json.dumps(sorted(tree.items())).encode()).hexdigest()
        record = CommitRecord(
            sha=sha,
            parent=parent_sha,
            branch=branch,
            title=title,
            message=message,
            date=datetime.now(timezone.utc),
            tree=tree,
            added=list(added),
            deleted=[*deleted_files, *deleted_folders],
        )
        repo.commits[sha] = record
        repo.history.append(record)
        repo.branches[branch] = sha
        return record

    def _take_failure(self, endpoint: str, repo_id: str | None) -> _Failure | None:
        with self._lock:
            for failure in self._failures:
                if failure.endpoint in ("*", endpoint) and failure.repo_id in (None, repo_id):
                    failure.remaining -= 1
                    if failure.remaining == 0:
                        self._failures.remove(failure)
                    return failure
        return None

    def _log(self, record: RequestRecord) -> None:
        with self._lock:
            self._requests.append(record)

    # ----------------------------------------------------------------------------------------------------------------
    # Routing
    # ----------------------------------------------------------------------------------------------------------------

    def _route(self, method: str, raw_path: str) -> tuple[str, str | None, Any]:
        """Map a request to `(endpoint name, repo_id, bound handler or None)`."""
        parts = [unquote(part) for part in raw_path.strip("/").split("/")] if raw_path.strip("/") else []
        if parts[:1] == ["api"]:
            rest = parts[1:]
            if rest == ["whoami-v2"] and method == "GET":
                return "whoami", None, self._api_whoami
            if rest == ["agent-harnesses"] and method == "GET":  # fetched once per process to build the user agent
                return "agent-harnesses", None, lambda req: _Response.json({"standardEnvVars": [], "harnesses": {}})
            if rest == ["repos", "create"] and method == "POST":
                return "create", None, self._api_create_repo
            if rest == ["repos", "delete"] and method in ("DELETE", "POST"):
                return "delete", None, self._api_delete_repo
            if rest == ["validate-yaml"] and method == "POST":
                return "validate-yaml", None, self._api_validate_yaml
            if len(rest) >= 3 and rest[0] in _API_REPO_TYPES:
                repo_type, repo_id, tail = _API_REPO_TYPES[rest[0]], f"{rest[1]}/{rest[2]}", rest[3:]
                return self._route_repo_api(method, repo_type, repo_id, tail)
            return "other", None, None
        # `/{prefix}{namespace}/{name}/resolve/{revision}/{path...}`
        repo_type = "model"
        if parts[:1] in (["datasets"], ["spaces"]) and len(parts) > 1 and parts[1] != "resolve":
            repo_type, parts = parts[0][:-1], parts[1:]
        if len(parts) >= 5 and parts[2] == "resolve" and method in ("GET", "HEAD"):
            repo_id, revision, path = f"{parts[0]}/{parts[1]}", parts[3], "/".join(parts[4:])
            return "resolve", repo_id, lambda req: self._resolve_file(req, repo_type, repo_id, revision, path)
        return "other", None, None

    def _route_repo_api(self, method: str, repo_type: str, repo_id: str, tail: list[str]) -> tuple[str, str, Any]:
        def bind(name: str, func: Any, *args: Any) -> tuple[str, str, Any]:
            return name, repo_id, lambda req: func(req, repo_type, repo_id, *args)

        if not tail and method == "GET":
            return bind("info", self._api_info, "main")
        if len(tail) == 2 and tail[0] == "revision" and method == "GET":
            return bind("info", self._api_info, tail[1])
        if len(tail) >= 2 and tail[0] == "tree" and method == "GET":
            return bind("tree", self._api_tree, tail[1], "/".join(tail[2:]).strip("/"))
        if len(tail) == 2 and tail[0] == "paths-info" and method == "POST":
            return bind("paths-info", self._api_paths_info, tail[1])
        if len(tail) == 2 and tail[0] == "commits" and method == "GET":
            return bind("commits", self._api_commits, tail[1])
        if len(tail) == 2 and tail[0] == "preupload" and method == "POST":
            return bind("preupload", self._api_preupload, tail[1])
        if len(tail) == 2 and tail[0] == "commit" and method == "POST":
            return bind("commit", self._api_commit, tail[1])
        return "other", repo_id, None

    def _handle(self, req: _HubRequestHandler, method: str) -> _Response:
        split = urlsplit(req.path)
        endpoint, repo_id, handler = self._route(method, split.path)
        paths = _request_paths(endpoint, req) if endpoint in ("preupload", "commit") else ()
        injected = False
        try:
            failure = self._take_failure(endpoint, repo_id) if endpoint != "agent-harnesses" else None
            if failure is not None:
                injected = True
                if failure.mode != "status":
                    with self._lock:
                        release = self._release
                    self._log(RequestRecord(method, split.path, endpoint, repo_id, 0, True, paths))
                    if failure.mode == "stall":
                        release.wait(failure.max_seconds)
                    raise _DropConnection
                raise _HubError(failure.status, failure.message)
            if handler is None:
                raise _HubError(404, f"Not found: {method} {split.path}")
            response = handler(req)
        except _DropConnection:
            raise
        except _HubError as err:
            headers = {"X-Error-Message": err.message, **err.headers}
            if err.error_code is not None:
                headers["X-Error-Code"] = err.error_code
            response = _Response.json({"error": err.message}, err.status, headers)
        except Exception as err:  # a bug in this server: answer 500 rather than dropping the connection
            message = f"Fake Hub internal error: {type(err).__name__}: {err}"
            response = _Response.json({"error": message}, 500, {"X-Error-Message": message})
        if endpoint != "agent-harnesses":  # client bookkeeping, not Hub usage: kept out of the log
            self._log(RequestRecord(method, split.path, endpoint, repo_id, response.status, injected, paths))
        return response

    # ----------------------------------------------------------------------------------------------------------------
    # Endpoints
    # ----------------------------------------------------------------------------------------------------------------

    def _check_token(self, req: _HubRequestHandler) -> None:
        if self.require_token and not req.headers.get("Authorization", "").startswith("Bearer "):
            raise _HubError(401, "Invalid credentials in Authorization header")

    def _api_whoami(self, req: _HubRequestHandler) -> _Response:
        self._check_token(req)
        return _Response.json(
            {
                "type": "user",
                "id": "0" * 24,
                "name": self.user,
                "fullname": self.user,
                "email": None,
                "emailVerified": False,
                "isPro": False,
                "orgs": [],
                "auth": {"type": "access_token", "accessToken": {"displayName": "test", "role": "write"}},
            }
        )

    def _repo_from_body(self, body: dict[str, Any]) -> tuple[str, str]:
        name = body.get("name")
        if not isinstance(name, str) or not re.fullmatch(r"[\w.\-]{1,96}", name):
            raise _HubError(400, f"Invalid repo name: {name!r}")
        namespace = body.get("organization") or self.user
        repo_type = body.get("type") or "model"
        if repo_type not in _URL_PREFIXES:
            raise _HubError(400, f"Invalid repo type: {repo_type!r}")
        return repo_type, f"{namespace}/{name}"

    def _api_create_repo(self, req: _HubRequestHandler) -> _Response:
        self._check_token(req)
        repo_type, repo_id = self._repo_from_body(req.json_body())
        body = req.json_body()
        private = body.get("visibility") == "private" or bool(body.get("private"))
        url = f"{self.url}/{_URL_PREFIXES[repo_type]}{repo_id}"
        with self._lock:
            if (repo_type, repo_id) in self._repos:
                return _Response.json({"error": f"You already created this {repo_type} repo", "url": url}, 409)
            self._new_repo(repo_type, repo_id, private)
        return _Response.json({"url": url, "name": repo_id, "id": repo_id}, 200)

    def _api_delete_repo(self, req: _HubRequestHandler) -> _Response:
        self._check_token(req)
        repo_type, repo_id = self._repo_from_body(req.json_body())
        with self._lock:
            self._get_repo(repo_type, repo_id)
            del self._repos[(repo_type, repo_id)]
        return _Response(200)

    def _api_validate_yaml(self, req: _HubRequestHandler) -> _Response:
        content = req.json_body().get("content", "")
        errors = _validate_card_metadata(content if isinstance(content, str) else "")
        if errors:
            return _Response.json(
                {"error": "Invalid metadata", "errors": [{"message": message} for message in errors]},
                400,
                {"X-Error-Message": "; ".join(errors)},
            )
        return _Response.json({"errors": [], "warnings": []})

    def _api_info(self, req: _HubRequestHandler, repo_type: str, repo_id: str, revision: str) -> _Response:
        with_blobs = req.query_flag("blobs")
        with self._lock:
            repo = self._get_repo(repo_type, repo_id)
            commit = self._resolve(repo, revision)
            siblings = []
            for path, blob in sorted(commit.tree.items()):
                sibling: dict[str, Any] = {"rfilename": path}
                if with_blobs:
                    sibling.update(size=len(self._blobs[blob]), blobId=blob)
                siblings.append(sibling)
            used_storage = sum(len(self._blobs[blob]) for blob in commit.tree.values())
        namespace = repo_id.split("/")[0]
        info: dict[str, Any] = {
            "_id": hashlib.sha1(f"{repo_type}/{repo_id}".encode()).hexdigest()[:24],
            "id": repo_id,
            "author": namespace,
            "sha": commit.sha,
            "lastModified": _iso(commit.date),
            "createdAt": _iso(repo.created_at),
            "private": repo.private,
            "disabled": False,
            "gated": False,
            "downloads": 0,
            "likes": 0,
            "tags": [],
            "siblings": siblings,
            "usedStorage": used_storage,
        }
        if repo_type == "model":
            info["modelId"] = repo_id
        return _Response.json(info)

    def _tree_entry(self, repo: _Repo, commit: CommitRecord, path: str, is_dir: bool, expand: bool) -> dict[str, Any]:
        if is_dir:
            oid = hashlib.sha1(f"tree {commit.sha} {path}".encode()).hexdigest()
            entry: dict[str, Any] = {"type": "directory", "oid": oid, "size": 0, "path": path}
        else:
            blob = commit.tree[path]
            entry = {"type": "file", "oid": blob, "size": len(self._blobs[blob]), "path": path}
        if expand:
            last = _last_commit_touching(repo, commit, path, is_dir)
            entry["lastCommit"] = {"id": last.sha, "title": last.title, "date": _iso(last.date)}
            if not is_dir:
                entry["securityFileStatus"] = {
                    "status": "safe",
                    "avScan": {"virusFound": False},
                    "pickleImportScan": None,
                }
        return entry

    def _api_tree(self, req: _HubRequestHandler, repo_type: str, repo_id: str, revision: str, path: str) -> _Response:
        recursive, expand = req.query_flag("recursive"), req.query_flag("expand")
        cursor = int(req.query_value("cursor") or 0)
        with self._lock:
            repo = self._get_repo(repo_type, repo_id)
            commit = self._resolve(repo, revision)
            prefix = f"{path}/" if path else ""
            if path and path in commit.tree:
                raise _HubError(404, f"{path} is a file, not a folder", "EntryNotFound")
            files = [name for name in commit.tree if name.startswith(prefix)]
            if path and not files:
                raise _HubError(404, f"Folder {path!r} not found", "EntryNotFound")
            dirs: set[str] = set()
            listed_files: list[str] = []
            for name in files:
                rel_parts = name[len(prefix) :].split("/")
                if recursive:
                    listed_files.append(name)
                    dirs.update(prefix + "/".join(rel_parts[:depth]) for depth in range(1, len(rel_parts)))
                elif len(rel_parts) == 1:
                    listed_files.append(name)
                else:
                    dirs.add(prefix + rel_parts[0])
            ordered = [(name, True) for name in sorted(dirs)] + [(name, False) for name in sorted(listed_files)]
            page_size = min(self.tree_page_size, 50) if expand else self.tree_page_size
            page = ordered[cursor : cursor + page_size]
            entries = [self._tree_entry(repo, commit, name, is_dir, expand) for name, is_dir in page]
        headers = {}
        if cursor + page_size < len(ordered):
            query = urlencode(
                {"recursive": str(recursive).lower(), "expand": str(expand).lower(), "cursor": cursor + page_size}
            )
            headers["Link"] = f'<{self.url}{urlsplit(req.path).path}?{query}>; rel="next"'
        return _Response.json(entries, headers=headers)

    def _api_paths_info(self, req: _HubRequestHandler, repo_type: str, repo_id: str, revision: str) -> _Response:
        form = parse_qs(req.body().decode(), keep_blank_values=True)
        expand = form.get("expand", ["false"])[0].lower() == "true"
        with self._lock:
            repo = self._get_repo(repo_type, repo_id)
            commit = self._resolve(repo, revision)
            entries = []
            for path in dict.fromkeys(form.get("paths", [])):
                path = path.strip("/")
                if path in commit.tree:
                    entries.append(self._tree_entry(repo, commit, path, False, expand))
                elif any(name.startswith(path + "/") for name in commit.tree):
                    entries.append(self._tree_entry(repo, commit, path, True, expand))
        return _Response.json(entries)

    def _api_commits(self, req: _HubRequestHandler, repo_type: str, repo_id: str, revision: str) -> _Response:
        with self._lock:
            repo = self._get_repo(repo_type, repo_id)
            current: CommitRecord | None = self._resolve(repo, revision)
            items = []
            while current is not None:
                items.append(
                    {
                        "id": current.sha,
                        "title": current.title,
                        "message": current.message,
                        "authors": [{"user": self.user}],
                        "date": _iso(current.date),
                    }
                )
                current = repo.commits[current.parent] if current.parent is not None else None
        return _Response.json(items)

    def _api_preupload(self, req: _HubRequestHandler, repo_type: str, repo_id: str, revision: str) -> _Response:
        self._check_token(req)
        files = req.json_body().get("files")
        if not isinstance(files, list):
            raise _HubError(400, "Expected a `files` list")
        with self._lock:
            repo = self._get_repo(repo_type, repo_id)
            commit = self._resolve(repo, revision)
            answer = [
                {
                    "path": item["path"],
                    "uploadMode": "regular",
                    "shouldIgnore": False,
                    "oid": commit.tree.get(item["path"]),
                }
                for item in files
            ]
        return _Response.json({"files": answer, "commitOid": commit.sha})

    def _api_commit(self, req: _HubRequestHandler, repo_type: str, repo_id: str, revision: str) -> _Response:
        self._check_token(req)
        header: dict[str, Any] | None = None
        added: dict[str, bytes] = {}
        deleted_files: list[str] = []
        deleted_folders: list[str] = []
        for line in req.body().splitlines():
            if not line.strip():
                continue
            try:
                item = json.loads(line)
                key, value = item["key"], item["value"]
            except (ValueError, KeyError, TypeError) as err:
                raise _HubError(400, f"Malformed NDJSON line: {err}") from err
            if key == "header":
                header = value
            elif key == "file":
                path = _clean_path(value.get("path"))
                encoding = value.get("encoding", "utf-8")
                content = value.get("content", "")
                try:
                    added[path] = (
                        base64.b64decode(content, validate=True) if encoding == "base64" else content.encode()
                    )
                except (ValueError, AttributeError) as err:
                    raise _HubError(400, f"Invalid content for {path}: {err}") from err
            elif key == "deletedFile":
                deleted_files.append(_clean_path(value.get("path")))
            elif key == "deletedFolder":
                deleted_folders.append(_clean_path(value.get("path")))
            elif key == "lfsFile":
                raise _HubError(400, "This test server only accepts regular uploads (no LFS/Xet objects)")
            else:
                raise _HubError(400, f"Unknown NDJSON key {key!r}")
        if header is None or not header.get("summary"):
            raise _HubError(400, "The commit has no header line with a summary")
        create_pr = req.query_flag("create_pr")
        with self._lock:
            repo = self._get_repo(repo_type, repo_id)
            base = self._resolve(repo, revision)
            parent = header.get("parentCommit")
            if parent is not None and parent != base.sha:
                raise _HubError(412, f"A commit has happened since {parent}. Please refresh and try again.")
            if create_pr:
                repo.num_prs += 1
                branch = f"refs/pr/{repo.num_prs}"
                repo.branches[branch] = base.sha
            elif revision in repo.branches:
                branch = revision
            else:
                raise _HubError(400, f"Cannot commit to {revision!r}: not a branch")
            record = self._commit(
                repo, branch, header["summary"], header.get("description") or "", added, deleted_files, deleted_folders
            )
        repo_url = f"{self.url}/{_URL_PREFIXES[repo_type]}{repo_id}"
        answer: dict[str, Any] = {
            "success": True,
            "commitOid": record.sha,
            "commitUrl": f"{repo_url}/commit/{record.sha}",
        }
        if create_pr:
            answer["pullRequestUrl"] = f"{repo_url}/discussions/{repo.num_prs}"
        return _Response.json(answer)

    def _resolve_file(
        self, req: _HubRequestHandler, repo_type: str, repo_id: str, revision: str, path: str
    ) -> _Response:
        with self._lock:
            commit = self._resolve(self._get_repo(repo_type, repo_id), revision)
            blob = commit.tree.get(path)
            if blob is None:
                raise _HubError(404, "Entry not found", "EntryNotFound", {"X-Repo-Commit": commit.sha})
            content = self._blobs[blob]
        headers = {
            "Content-Type": "application/octet-stream",
            "X-Repo-Commit": commit.sha,
            "ETag": f'"{blob}"',
            "Accept-Ranges": "bytes",
            "Content-Disposition": f"inline; filename*=UTF-8''{quote(path.rsplit('/', 1)[-1])}",
        }
        match = re.fullmatch(r"bytes=(\d+)-(\d*)", req.headers.get("Range", ""))
        if match and int(match.group(1)) < len(content):
            start = int(match.group(1))
            end = min(int(match.group(2)), len(content) - 1) if match.group(2) else len(content) - 1
            headers["Content-Range"] = f"bytes {start}-{end}/{len(content)}"
            return _Response(206, content[start : end + 1], headers)
        return _Response(200, content, headers)


def _request_paths(endpoint: str, req: _HubRequestHandler) -> tuple[str, ...]:
    """Best-effort list of the repository paths named in a preupload or commit request body."""
    try:
        if endpoint == "preupload":
            return tuple(item["path"] for item in json.loads(req.body())["files"])
        paths = []
        for line in req.body().splitlines():
            item = json.loads(line) if line.strip() else {}
            if item.get("key") != "header" and isinstance(item.get("value"), dict) and "path" in item["value"]:
                paths.append(item["value"]["path"])
        return tuple(paths)
    except (ValueError, KeyError, TypeError, AttributeError):
        return ()


def _last_commit_touching(repo: _Repo, commit: CommitRecord, path: str, is_dir: bool) -> CommitRecord:
    """The newest ancestor of `commit` (itself included) that changed `path` (a file, or any file under a folder)."""

    def view(record: CommitRecord) -> Any:
        if not is_dir:
            return record.tree.get(path)
        prefix = path + "/"
        return sorted((key, value) for key, value in record.tree.items() if key.startswith(prefix))

    current = commit
    while current.parent is not None and view(repo.commits[current.parent]) == view(current):
        current = repo.commits[current.parent]
    return current


def _clean_path(path: Any) -> str:
    """Validate a path in a repository the way the Hub does (relative, no `..`, no empty segments)."""
    if not isinstance(path, str) or not path or path.startswith("/") or "\\" in path:
        raise _HubError(400, f"Invalid path in repo: {path!r}")
    parts = path.split("/")
    if any(part in ("", ".", "..") for part in parts) or parts[0] == ".git":
        raise _HubError(400, f"Invalid path in repo: {path!r}")
    return path


def _validate_card_metadata(content: str) -> list[str]:
    """Return the errors the Hub would report for a README's YAML front matter (empty list if it is fine)."""
    if not content.startswith("---"):
        return []
    match = re.match(r"^---[ \t]*\r?\n(.*?\r?\n)?---[ \t]*(\r?\n|$)", content, re.DOTALL)
    if match is None:
        return ["The YAML metadata block is not closed by a '---' line"]
    try:
        import yaml
    except ImportError:  # pragma: no cover - PyYAML ships with huggingface_hub
        return []
    try:
        metadata = yaml.safe_load(match.group(1) or "")
    except yaml.YAMLError as err:
        return [f"Invalid YAML: {err}"]
    if metadata is not None and not isinstance(metadata, dict):
        return ["The YAML metadata must be a mapping"]
    return []


class _ThreadingServer(ThreadingHTTPServer):
    """One daemon thread per connection, and a listen backlog that absorbs parallel downloads (8 threads)."""

    daemon_threads = True
    request_queue_size = 128


class _HubRequestHandler(BaseHTTPRequestHandler):
    """Turns HTTP requests into `HubServer._handle` calls; one connection per request (HTTP/1.0)."""

    hub: HubServer  # set on the subclass made by `HubServer._bind`
    server_version = "FakeHub/1.0"
    _body: bytes | None = None

    def log_message(self, format: str, *args: Any) -> None:
        """Keep test output quiet (use `HubServer.requests` instead)."""

    def body(self) -> bytes:
        """The request body (Content-Length or chunked transfer encoding)."""
        if self._body is None:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                chunks = []
                while True:
                    size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                    if size == 0:
                        self.rfile.readline()
                        break
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline()
                self._body = b"".join(chunks)
            else:
                self._body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        return self._body

    def json_body(self) -> dict[str, Any]:
        """The request body parsed as a JSON object."""
        try:
            payload = json.loads(self.body() or b"{}")
        except ValueError as err:
            raise _HubError(400, f"Invalid JSON body: {err}") from err
        if not isinstance(payload, dict):
            raise _HubError(400, "Expected a JSON object")
        return payload

    def query_value(self, name: str) -> str | None:
        """The first value of a query parameter."""
        values = parse_qs(urlsplit(self.path).query).get(name)
        return values[0] if values else None

    def query_flag(self, name: str) -> bool:
        """A boolean query parameter (`true`/`True`/`1`)."""
        return (self.query_value(name) or "").lower() in ("1", "true")

    def _serve(self, method: str) -> None:
        if method != "HEAD" and method != "GET":
            self.body()  # always drain the request body before answering
        try:
            response = self.hub._handle(self, method)
        except _DropConnection:
            self.close_connection = True  # no status line, no headers: the client sees a dropped connection
            return
        self.send_response(response.status)
        for name, value in response.headers.items():  # header values must be one line of latin-1
            self.send_header(name, " ".join(value.split()).encode("latin-1", "replace").decode("latin-1"))
        self.send_header("Content-Length", str(len(response.body)))
        self.end_headers()
        if method != "HEAD":
            self.wfile.write(response.body)

    def do_GET(self) -> None:
        self._serve("GET")

    def do_HEAD(self) -> None:
        self._serve("HEAD")

    def do_POST(self) -> None:
        self._serve("POST")

    def do_PUT(self) -> None:
        self._serve("PUT")

    def do_DELETE(self) -> None:
        self._serve("DELETE")


# --------------------------------------------------------------------------------------------------------------------
# Client-side helpers: point the already-imported Hub clients at a cache folder, or switch them offline.
# --------------------------------------------------------------------------------------------------------------------

# Packages whose modules copy `huggingface_hub.constants` values into their own namespace at import time
# (`from huggingface_hub.constants import HF_HUB_OFFLINE`), so patching `huggingface_hub.constants` alone misses them.
CLIENT_PACKAGES = ("huggingface_hub", "diffusers", "transformers", "datasets", "peft", "accelerate", "metagan_hub")


def _patch_loaded_copies(monkeypatch: pytest.MonkeyPatch, name: str, value: object, only_if: object = None) -> None:
    """Set `name` to `value` on every loaded module of `CLIENT_PACKAGES` that defines it (optionally only where it
    currently equals `only_if`). Module `__dict__`s are read directly so that lazy modules import nothing."""
    for module_name, module in list(sys.modules.items()):
        if module is None or module_name.split(".")[0] not in CLIENT_PACKAGES:
            continue
        namespace = getattr(module, "__dict__", {})
        if name in namespace and (only_if is None or namespace[name] == only_if):
            monkeypatch.setattr(module, name, value)


def set_hub_offline(monkeypatch: pytest.MonkeyPatch, enabled: bool = True) -> None:
    """Switch `huggingface_hub` (and libraries that copied its flag: diffusers, datasets, ...) offline or online.

    `HF_HUB_OFFLINE` is read once, at import, into `huggingface_hub.constants.HF_HUB_OFFLINE`; setting the
    environment variable later has no effect on this process. Offline, every Hub HTTP call raises
    `OfflineModeIsEnabled` and downloads are served from the cache only. `monkeypatch` undoes it.
    """
    monkeypatch.setenv("HF_HUB_OFFLINE", "1" if enabled else "0")
    _patch_loaded_copies(monkeypatch, "HF_HUB_OFFLINE", enabled)


def use_hf_home(monkeypatch: pytest.MonkeyPatch, home: str | os.PathLike) -> Path:
    """Make `home` the Hugging Face home (hub cache in `home/hub`) for this process and its subprocesses.

    The cache folders are read at import into `huggingface_hub.constants`, so both the environment and the constants
    are patched. Returns the hub cache folder. `monkeypatch` undoes it.
    """
    home = Path(home)
    folders = {
        "HF_HOME": home,
        "HF_HUB_CACHE": home / "hub",
        "HUGGINGFACE_HUB_CACHE": home / "hub",
        "HF_ASSETS_CACHE": home / "assets",
        "HUGGINGFACE_ASSETS_CACHE": home / "assets",
        "HF_XET_CACHE": home / "xet",
    }
    constants = sys.modules.get("huggingface_hub.constants")
    for name, folder in folders.items():
        folder.mkdir(parents=True, exist_ok=True)
        if name.startswith("HF_"):
            monkeypatch.setenv(name, str(folder))
        if constants is not None and name in vars(constants):
            _patch_loaded_copies(monkeypatch, name, str(folder), only_if=getattr(constants, name))
    return folders["HF_HUB_CACHE"]
