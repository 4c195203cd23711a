# Copyright 2026 The metagan_hub developers. Licensed under the Apache License, Version 2.0.
"""Uploading saved folders to the Hub with the ignore rules and error messages every metagan_hub push shares."""

from __future__ import annotations

import logging
import os

from huggingface_hub import HfApi
from huggingface_hub.errors import HfHubHTTPError

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

    Raises:
        `HubUploadError`: the repository could not be created or the upload failed; nothing local is touched.

    Example:

    ```py
    >>> from metagan_hub.hub.upload import upload_folder_to_hub

    >>> url = upload_folder_to_hub("runs/adapted", "me/metagan-my-glyph")  # doctest: +SKIP
    ```
    """
    if not isinstance(repo_id, str) or not repo_id or repo_id.count("/") > 1:
        raise ValueError(f"`repo_id` must be a Hub repository id like 'namespace/name', got {repo_id!r}.")
    api = HfApi(token=token)
    try:
        api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        commit = api.upload_folder(
            repo_id=repo_id,
            folder_path=os.fspath(folder),
            commit_message=commit_message,
            create_pr=create_pr,
            revision=revision,
            ignore_patterns=IGNORE_PATTERNS + list(ignore_patterns or []),
        )
    except (HfHubHTTPError, OSError) as err:
        raise HubUploadError(
            f"Pushing {os.fspath(folder)!r} to the Hub repository {repo_id!r} failed: {err}. "
            "Nothing local was changed; fix the cause and push again."
        ) from err
    url = getattr(commit, "pr_url", None) or commit.commit_url
    logger.info("Pushed %s to %s", folder, url)
    return url
