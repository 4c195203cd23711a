# Copyright 2026 The metagan_hub developers. Licensed under the Apache License, Version 2.0.
"""`push_to_hub` for Meta-GAN models: safetensors + config + model card, never checkpoints or optimizer state."""

from __future__ import annotations

import os
import tempfile

from .model_card import render_pipeline_card
from .network import bounded_hub_requests, describe_network_error, find_network_error
from .safety import check_finite_weights, strip_local_config_keys
from .upload import upload_folder_to_hub


class MetaGANModelHubMixin:
    """Gives a Meta-GAN `ModelMixin` a `save_pretrained` that refuses non-finite weights and never records where the
    model was loaded from, and a `push_to_hub` that writes safetensors and a metagan_hub model card."""

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs):
        """
        diffusers' `ModelMixin.from_pretrained` (folder or Hub repo id), with every Hub request bounded by `timeout`
        seconds (default: the `METAGAN_HUB_TIMEOUT` environment variable, else 60 s).
        """
        with bounded_hub_requests(kwargs.pop("timeout", None)) as seconds:
            try:
                return super().from_pretrained(pretrained_model_name_or_path, **kwargs)
            except OSError as err:
                cause = find_network_error(err)
                if cause is None:
                    raise
                raise OSError(
                    f"Could not load {os.fspath(pretrained_model_name_or_path)!r}: "
                    f"{describe_network_error(cause, seconds)}. Nothing was loaded; retry, or use "
                    "`local_files_only=True` if it is in the local cache."
                ) from err

    def save_pretrained(
        self,
        save_directory: str | os.PathLike,
        is_main_process: bool = True,
        save_function=None,
        safe_serialization: bool = True,
        variant: str | None = None,
        max_shard_size: int | str = "10GB",
        push_to_hub: bool = False,
        **kwargs,
    ) -> None:
        """
        diffusers' `ModelMixin.save_pretrained`, except that weights holding NaN or infinite values are refused
        ([`~metagan_hub.hub.safety.NonFiniteWeightsError`], nothing written), the config never records the local
        folder the model was loaded from (`_name_or_path`), and `push_to_hub=True` goes through [`push_to_hub`].
        `variant` only labels the weight file (`diffusion_pytorch_model.<variant>.safetensors`): cast first.
        """
        if push_to_hub:
            repo_id = kwargs.pop("repo_id", None) or os.path.basename(os.path.normpath(os.fspath(save_directory)))
            keep = ("commit_message", "private", "token", "create_pr", "timeout")
            self.push_to_hub(
                repo_id,
                save_directory=save_directory,
                variant=variant,
                **{k: v for k, v in kwargs.items() if k in keep},
            )
            return
        check_finite_weights({type(self).__name__: self}, action="save")
        super().save_pretrained(
            save_directory,
            is_main_process=is_main_process,
            save_function=save_function,
            safe_serialization=safe_serialization,
            variant=variant,
            max_shard_size=max_shard_size,
            **kwargs,
        )
        strip_local_config_keys(save_directory, recursive=False)

    def push_to_hub(
        self,
        repo_id: str,
        *,
        commit_message: str | None = None,
        private: bool | None = None,
        token: str | None = None,
        create_pr: bool = False,
        variant: str | None = None,
        save_directory: str | os.PathLike | None = None,
        timeout: float | None = None,
        **kwargs,
    ) -> str:
        """
        Save the model with `save_pretrained` (safetensors) plus a model card, and upload it to `repo_id`.

        Args:
            repo_id (`str`): `"namespace/name"` on the Hub.
            commit_message (`str`, *optional*): the commit message.
            private (`bool`, *optional*): create the repository as private.
            token (`str`, *optional*): Hub token.
            create_pr (`bool`): open a pull request instead of committing.
            variant (`str`, *optional*): `"fp16"` or `"bf16"` to write `diffusion_pytorch_model.<variant>.safetensors`.
            save_directory (`str`, *optional*): where to write the files first; kept after the push (a temporary
                folder is used and removed when not given).
            timeout (`float`, *optional*): the longest wait in seconds for each Hub request (default: the
                `METAGAN_HUB_TIMEOUT` environment variable, else 60 s).

        Returns:
            `str`: the URL of the commit (or pull request).

        Example:

        ```py
        >>> from metagan_hub import MetaGANGenerator

        >>> MetaGANGenerator(sample_size=32).push_to_hub("me/metagan-generator")  # doctest: +SKIP
        ```
        """
        with tempfile.TemporaryDirectory() as tmp:
            folder = os.fspath(save_directory) if save_directory is not None else tmp
            self.save_pretrained(folder, variant=variant, safe_serialization=True)
            render_pipeline_card(self, repo_id).save(os.path.join(folder, "README.md"))
            return upload_folder_to_hub(
                folder,
                repo_id,
                token=token,
                private=private,
                commit_message=commit_message or f"Upload {type(self).__name__} with metagan_hub",
                create_pr=create_pr,
                timeout=timeout,
            )
