# Copyright 2026 The metagan_hub developers. Licensed under the Apache License, Version 2.0.
"""adapt() under hostile options: a diverged run is reported, its record is written as strict JSON, and a folder
whose images sit in subfolders says what it reads and what it does not."""

from __future__ import annotations

import json
import logging

import PIL.Image
import pytest
import torch

from tests.conformance.common import SIZE, images, tiny_pipeline

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_diverged_run_warns_and_its_record_is_strict_json(tmp_path, caplog):
    pipe = tiny_pipeline()
    # learning_rate=1e4: the R1 term overflows on every 4th step; the last of 17 steps (index 16) is one of them
    with caplog.at_level(logging.WARNING, logger="metagan_hub"):
        adapted = pipe.adapt(
            images(4), num_steps=17, batch_size=2, learning_rate=1e4, generator=torch.Generator().manual_seed(0)
        )
    assert "the final d_loss is not finite" in caplog.text and "`learning_rate` (got 10000)" in caplog.text
    adapted.save_pretrained(tmp_path)
    text = (tmp_path / "metagan_hub.json").read_text()
    assert "Infinity" not in text and "NaN" not in text
    record = json.loads(text)["adaptation"]  # parses as strict JSON
    assert record["final_d_loss"] is None
    assert "non-finite values written as null: adaptation.final_d_loss" in caplog.text


def test_folder_with_top_level_image_and_subfolders_says_what_it_reads(tmp_path, caplog):
    PIL.Image.new("L", (SIZE, SIZE), 255).save(tmp_path / "top.png")
    for name in ("class_a", "class_b"):
        (tmp_path / name).mkdir()
        for i in range(3):
            PIL.Image.new("L", (SIZE, SIZE), 40 * i).save(tmp_path / name / f"{i}.png")
    with caplog.at_level(logging.WARNING, logger="metagan_hub"):
        adapted = tiny_pipeline().adapt(
            str(tmp_path), num_steps=1, batch_size=1, generator=torch.Generator().manual_seed(0)
        )
    assert adapted.card_info["adaptation"]["shots"] == 1
    assert "using the 1 image file(s) at its top level; 6 more in 2 subfolder(s) (class_a, class_b)" in caplog.text
    assert "are not read" in caplog.text
