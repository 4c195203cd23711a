# Copyright 2026 The metagan_hub developers. Licensed under the Apache License, Version 2.0.
"""The Usage code of the cards that `save_pretrained` and `save_lora_weights` write runs as printed, once its
placeholder paths point at the saved folders, and gives what the saved pipeline gives."""

from __future__ import annotations

import re

import torch

from metagan_hub import MetaGANPipeline
from tests.testing_utils import tiny_pipeline

THIS_FOLDER = "path/to/this/folder"


def usage_code(card: str) -> list[str]:
    """The Python blocks of a card's Usage section."""
    usage = card.split("\n## Usage\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", usage, flags=re.S)


def run(code: str, **namespace) -> dict:
    exec(compile(code, "<card usage>", "exec"), namespace)  # the card's own example code
    return namespace


def test_pipeline_card_usage_runs(tmp_path, monkeypatch):
    folder = tmp_path / "pipe"
    pipe = tiny_pipeline()
    pipe.save_pretrained(folder)
    blocks = usage_code((folder / "README.md").read_text(encoding="utf-8"))
    assert len(blocks) == 2 and all(THIS_FOLDER in block for block in blocks)
    monkeypatch.chdir(tmp_path)
    # the commented adaptation line runs too, on 5 images and 2 steps
    first = blocks[0].replace(THIS_FOLDER, str(folder)).replace("# adapted = ", "adapted = ")
    first = first.replace("num_steps=200", "num_steps=2")
    ns = run(first, my_images=torch.rand(5, 1, 16, 16) * 2 - 1)
    expected = pipe(batch_size=16, generator=torch.Generator().manual_seed(0)).images
    assert len(ns["images"]) == 16 and ns["images"][0].tobytes() == expected[0].tobytes()
    assert (tmp_path / "sample.png").is_file()
    assert isinstance(ns["adapted"], MetaGANPipeline)
    ns = run(blocks[1].replace(THIS_FOLDER, str(folder)))
    assert type(ns["pipe"]).__name__ == "MetaGANPipeline"


def test_lora_card_usage_reproduces_the_adapter(tmp_path, monkeypatch):
    base_folder, adapter_folder = tmp_path / "base", tmp_path / "adapter"
    tiny_pipeline().save_pretrained(base_folder)
    base = MetaGANPipeline.from_pretrained(base_folder)
    base.set_progress_bar_config(disable=True)
    adapted = base.adapt(
        torch.rand(5, 1, 16, 16) * 2 - 1, num_steps=3, lora_rank=2, generator=torch.Generator().manual_seed(0)
    )
    adapted.save_lora_weights(adapter_folder)
    (block,) = usage_code((adapter_folder / "README.md").read_text(encoding="utf-8"))
    assert 'from_pretrained("path/to/base")' in block and THIS_FOLDER in block
    monkeypatch.chdir(tmp_path)
    ns = run(block.replace("path/to/base", str(base_folder)).replace(THIS_FOLDER, str(adapter_folder)))
    expected = adapted(batch_size=16, generator=torch.Generator().manual_seed(0)).images
    assert [im.tobytes() for im in ns["images"]] == [im.tobytes() for im in expected]
