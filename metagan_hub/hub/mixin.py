# Copyright 2026 The metagan_hub developers. Licensed under the Apache License, Version 2.0.
"""`push_to_hub` for Meta-GAN models: safetensors + config + model card, never checkpoints or optimizer state."""

from __future__ import annotations

import os
import tempfile

from .model_card import render_pipeline_card
from .upload import upload_folder_to_hub


class MetaGANModelHubMixin:
    """Gives a Meta-GAN `ModelMixin` a `push_to_hub` that writes safetensors and a metagan_hub model card."""

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
            )
