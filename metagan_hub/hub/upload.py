# Copyright 2026 The metagan_hub developers. Licensed under the Apache License, Version 2.0.
"""Uploading saved folders to the Hub with the ignore rules and error messages every metagan_hub push shares."""

from __future__ import annotations

import fnmatch
import logging
import os

from huggingface_hub import HfApi
from huggingface_hub.errors import HfHubHTTPError

from .network import NETWORK_ERRORS, bounded_hub_requests, describe_network_error, resolve_timeout
from .safety import find_local_data, strip_local_config_keys

logger = logging.getLogger(__name__)

# Never uploaded: training checkpoints, optimizer / scheduler / RNG state, pickles and logs.
IGNORE_PATTERNS = [
    "checkpoint-*",
    "checkpoint-*/**",
    "**/checkpoint-*/**",
    "*.pt",
    "*.pth",
    "*.bin",
    "*.pkl",
    "optimizer*",
    "scheduler*",
    "random_states*",
    "logs/**",
    ".cache/**",
    "*.tmp",
]


class HubUploadError(RuntimeError):
    """Raised when pushing to the Hub fails; the local files are left as they were."""


class LocalDataLeakError(HubUploadError):
    """Raised before an upload that would publish absolute local paths or Hub tokens; nothing was sent."""


def _ignored(rel: str, patterns: list[str]) -> bool:
    rel = rel.replace(os.sep, "/")
    return any(fnmatch.fnmatch(rel, p) or fnmatch.fnmatch(rel, p.rstrip("/*") + "/*") for p in patterns)


def files_to_upload(folder: str | os.PathLike, ignore_patterns: list[str] | None = None) -> list[str]:
    """The paths (relative to `folder`, `/`-separated) that an upload of `folder` sends, after `IGNORE_PATTERNS`."""
    folder = os.fspath(folder)
    patterns = IGNORE_PATTERNS + list(ignore_patterns or [])
    out = []
    for root, _, names in os.walk(folder):
        for name in names:
            rel = os.path.relpath(os.path.join(root, name), folder).replace(os.sep, "/")
            if not _ignored(rel, patterns):
                out.append(rel)
    return sorted(out)


def upload_folder_to_hub(
    folder: str | os.PathLike,
    repo_id: str,
    *,
    token: str | None = None,
    private: bool | None = None,
    commit_message: str = "Upload Meta-GAN with metagan_hub",
    create_pr: bool = False,
    revision: str | None = None,
    ignore_patterns: list[str] | None = None,
    timeout: float | None = None,
) -> str:
    """
    Create `repo_id` if needed and upload `folder` to it in one commit; returns the commit URL.

    Training checkpoints (`checkpoint-*`), optimizer state and pickles are never uploaded (see `IGNORE_PATTERNS`).

    Args:
        folder (`str` or `os.PathLike`): a folder written by `save_pretrained`.
        repo_id (`str`): `"namespace/name"` on the Hub.
        token (`str`, *optional*): Hub token; defaults to the cached login.
        private (`bool`, *optional*): create the repository as private.
        commit_message (`str`): the commit message.
        create_pr (`bool`): open a pull request instead of committing to `revision`.
        revision (`str`, *optional*): the branch to commit to.
        ignore_patterns (`list[str]`, *optional*): extra patterns to leave out.
        timeout (`float`, *optional*): the longest wait in seconds for each Hub request; defaults to the
            `METAGAN_HUB_TIMEOUT` environment variable, else 60 s.

    Before anything is sent, `_name_or_path` is removed from the folder's configs, and the files to upload (configs,
    model card, JSON sidecars, `.py` files, safetensors headers) are scanned for absolute local paths and Hub tokens.

    Raises:
        `LocalDataLeakError`: the upload would publish a local path or a token; nothing was sent.
        `HubUploadError`: the repository could not be created, the upload failed, the connection broke or the Hub
            did not answer in time; nothing local is touched.

    Example:

    ```py
    >>> from metagan_hub.hub.upload import upload_folder_to_hub

    >>> url = upload_folder_to_hub("runs/adapted", "me/metagan-my-glyph")  # doctest: +SKIP
    ```
    """
    if not isinstance(repo_id, str) or not repo_id or repo_id.count("/") > 1:
        raise ValueError(f"`repo_id` must be a Hub repository id like 'namespace/name', got {repo_id!r}.")
    if not os.path.isdir(folder):
        raise ValueError(f"`folder` must be an existing folder, got {os.fspath(folder)!r}.")
    timeout = resolve_timeout(timeout)
    # 1. nothing local leaves the machine: drop `_name_or_path` from configs, then refuse if anything is left
    patterns = IGNORE_PATTERNS + list(ignore_patterns or [])
    strip_local_config_keys(folder)
    api = HfApi(token=token)
    findings = find_local_data(folder, files_to_upload(folder, ignore_patterns), token=token)
    if findings:
        raise LocalDataLeakError(
            f"Refusing to push {os.fspath(folder)!r} to {repo_id!r}: the upload would publish local data:\n  "
            + "\n  ".join(findings)
            + "\nNothing was sent. Remove these values (e.g. from `card_info`) and push again."
        )
    # 2. create the repo and commit, every request with a bounded wait
    try:
        with bounded_hub_requests(timeout) as seconds:
            api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
            commit = api.upload_folder(
                repo_id=repo_id,
                folder_path=os.fspath(folder),
                commit_message=commit_message,
                create_pr=create_pr,
                revision=revision,
                ignore_patterns=patterns,
            )
    except HfHubHTTPError as err:
        status = getattr(getattr(err, "response", None), "status_code", None)
        hint = "fix the cause and push again."
        if status in (401, 403):
            hint = (
                "the Hub refused the credentials: log in with `hf auth login` or pass `token=` (a token with write "
                "access to this namespace), then push again."
            )
        raise HubUploadError(
            f"Pushing {os.fspath(folder)!r} to the Hub repository {repo_id!r} failed: {err}. "
            f"Nothing local was changed; {hint}"
        ) from err
    except NETWORK_ERRORS as err:
        raise HubUploadError(
            f"Pushing {os.fspath(folder)!r} to the Hub repository {repo_id!r} failed: "
            f"{describe_network_error(err, resolve_timeout(timeout))}. Nothing local was changed and no partial "
            "commit was made (a commit is atomic); push again once the Hub is reachable."
        ) from err
    except OSError as err:
        raise HubUploadError(
            f"Pushing {os.fspath(folder)!r} to the Hub repository {repo_id!r} failed: {err}. "
            "Nothing local was changed; fix the cause and push again."
        ) from err
    url = getattr(commit, "pr_url", None) or commit.commit_url
    logger.info("Pushed %s to %s (wait limit %g s per request)", folder, url, seconds)
    return url
