# Copyright 2026 The metagan_hub developers. Licensed under the Apache License, Version 2.0.
"""Resuming meta-training (`scripts/train_metagan.py --resume_from_checkpoint`) never unpickles what the script
wrote: the task sampler state is JSON, a legacy `task_sampler.pt` is read with `weights_only=True`, and a crafted
pickle in its place is refused without running."""

from __future__ import annotations

import json
import logging
import os
import pickle
from pathlib import Path

import pytest
import torch
from accelerate.state import AcceleratorState, GradientState

from tests.testing_utils import load_script

REPO_ROOT = Path(__file__).resolve().parents[2]
TINY = [
    "--dataset", "digits", "--resolution", "16", "--latent_dim", "8", "--block_out_channels", "16,8",
    "--num_val_classes", "1", "--num_test_classes", "2", "--meta_batch_size", "2", "--inner_steps", "2",
    "--inner_batch_size", "4", "--num_validation_classes", "0", "--logging_steps", "1",
]  # fmt: skip


train_metagan = load_script("train_metagan_hostile", REPO_ROOT / "scripts" / "train_metagan.py")


pytestmark = pytest.mark.usefixtures("fresh_accelerate")


def run(*extra: str):
    return train_metagan.main(train_metagan.parse_args([*TINY, *extra]))


class _Payload:
    """Unpickling this object creates a marker folder: proof that code ran."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


@pytest.fixture(scope="module")
def checkpoint_run(tmp_path_factory):
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    out = tmp_path_factory.mktemp("hostile") / "run"
    run("--max_meta_steps", "1", "--checkpointing_steps", "1", "--output_dir", str(out))
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    return out


def test_task_sampler_state_is_json(checkpoint_run):
    checkpoint = checkpoint_run / "checkpoint-1"
    assert not (checkpoint / "task_sampler.pt").exists()
    state = json.loads((checkpoint / "task_sampler.json").read_text())
    assert state["position"] > 0 and isinstance(state["seed"], int)


def test_crafted_pickle_in_place_of_the_sampler_state_never_runs(checkpoint_run, tmp_path):
    import shutil

    out = tmp_path / "run"
    shutil.copytree(checkpoint_run, out)
    checkpoint = out / "checkpoint-1"
    (checkpoint / "task_sampler.json").unlink()
    marker = tmp_path / "pwned"
    with open(checkpoint / "task_sampler.pt", "wb") as f:
        pickle.dump({"position": 1, "hook": _Payload(str(marker))}, f)
    with pytest.raises(ValueError, match=r"task_sampler\.pt is not a plain task-sampler state"):
        run("--max_meta_steps", "2", "--output_dir", str(out), "--resume_from_checkpoint", "latest")
    assert not marker.exists()


def test_legacy_task_sampler_pt_still_resumes(checkpoint_run, tmp_path):
    import shutil

    out = tmp_path / "run"
    shutil.copytree(checkpoint_run, out)
    checkpoint = out / "checkpoint-1"
    state = json.loads((checkpoint / "task_sampler.json").read_text())
    (checkpoint / "task_sampler.json").unlink()
    torch.save(state, checkpoint / "task_sampler.pt")  # what earlier versions wrote
    pipe = run("--max_meta_steps", "2", "--output_dir", str(out), "--resume_from_checkpoint", "latest")
    assert pipe.card_info["training"]["meta_steps"] == 2


def test_resuming_from_a_folder_outside_output_dir_warns(checkpoint_run, tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        run(
            "--max_meta_steps", "2", "--output_dir", str(tmp_path / "new"),
            "--resume_from_checkpoint", str(checkpoint_run / "checkpoint-1"),
        )  # fmt: skip
    assert "Checkpoint folders are trusted input" in caplog.text
