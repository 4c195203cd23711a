# Copyright 2026 The metagan_hub developers. Licensed under the Apache License, Version 2.0.
"""Tests of `metagan_hub.training.checkpointing`, the checkpoints both training scripts write and resume from:
complete folders only, an atomic swap, pruning, recovery after a kill, and never NaN weights."""

from __future__ import annotations

import json
import logging

import pytest
import torch
from accelerate import Accelerator
from safetensors.torch import load_file

from metagan_hub.hub.safety import NonFiniteWeightsError
from metagan_hub.training.checkpointing import (
    TRAINING_STATE_NAME,
    clean_incomplete_checkpoints,
    list_checkpoints,
    read_checkpoint_state,
    resolve_checkpoint,
    save_checkpoint,
    warn_if_foreign_checkpoint,
)
from tests.testing_utils import one_thread_fresh_accelerate


@pytest.fixture
def accelerator():
    with one_thread_fresh_accelerate():
        yield Accelerator(cpu=True)


@pytest.fixture
def model(accelerator):
    torch.manual_seed(0)
    layer = torch.nn.Linear(3, 2)

    def save_hook(models, weights, output_dir):  # the scripts' hooks: weights as safetensors files
        from safetensors.torch import save_file

        save_file(layer.state_dict(), f"{output_dir}/layer.safetensors")
        weights.clear()

    accelerator.register_save_state_pre_hook(save_hook)
    accelerator.register_for_checkpointing(layer)
    return layer


def saved_weight(path) -> torch.Tensor:
    return load_file(f"{path}/layer.safetensors")["weight"]


def test_save_writes_a_complete_checkpoint_with_its_files(tmp_path, accelerator, model):
    path = save_checkpoint(accelerator, tmp_path, {"step": 2, "config": {"a": 1}}, {"layer": model}, {"x.json": [1]})
    assert path == str(tmp_path / "checkpoint-2")
    assert list_checkpoints(tmp_path) == [(2, path)]
    assert json.loads((tmp_path / "checkpoint-2" / TRAINING_STATE_NAME).read_text())["config"] == {"a": 1}
    assert json.loads((tmp_path / "checkpoint-2" / "x.json").read_text()) == [1]
    assert torch.equal(saved_weight(path), model.weight.detach())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-2"]  # no .tmp or .old left


def test_nan_weights_are_never_written_and_the_latest_checkpoint_stays(tmp_path, accelerator, model):
    save_checkpoint(accelerator, tmp_path, {"step": 1}, {"layer": model})
    with torch.no_grad():
        model.weight[0, 0] = float("nan")
    with pytest.raises(NonFiniteWeightsError, match=r"save checkpoint 2: tensor `weight` of component `layer`"):
        save_checkpoint(accelerator, tmp_path, {"step": 2}, {"layer": model})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-1"]
    assert resolve_checkpoint("latest", tmp_path) == str(tmp_path / "checkpoint-1")


def test_a_checkpoint_of_the_same_step_is_replaced_and_old_ones_pruned(tmp_path, accelerator, model):
    for step in (1, 2, 3):
        save_checkpoint(accelerator, tmp_path, {"step": step}, {"layer": model}, total_limit=2)
    assert [s for s, _ in list_checkpoints(tmp_path)] == [2, 3]
    with torch.no_grad():
        model.weight.add_(1.0)
    path = save_checkpoint(accelerator, tmp_path, {"step": 3}, {"layer": model}, total_limit=2)
    assert torch.equal(saved_weight(path), model.weight.detach())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-2", "checkpoint-3"]


def test_resolve_latest_by_name_and_bad_names(tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        assert resolve_checkpoint("latest", tmp_path) is None  # nothing yet: a new run, with a warning
    assert "starting a new run" in caplog.text
    assert resolve_checkpoint(None, tmp_path) is None
    for step in (2, 10):
        (tmp_path / f"checkpoint-{step}").mkdir()
        (tmp_path / f"checkpoint-{step}" / TRAINING_STATE_NAME).write_text("{}")
    (tmp_path / "checkpoint-11.tmp").mkdir()  # a killed save is never the latest
    (tmp_path / "checkpoint-12").mkdir()  # nor a folder without its training state
    assert resolve_checkpoint("latest", tmp_path) == str(tmp_path / "checkpoint-10")  # numeric order
    assert resolve_checkpoint("checkpoint-2", tmp_path) == str(tmp_path / "checkpoint-2")
    with pytest.raises(FileNotFoundError, match="'checkpoint-7': no such checkpoint folder"):
        resolve_checkpoint("checkpoint-7", tmp_path)
    with pytest.raises(ValueError, match="not a complete training checkpoint"):
        resolve_checkpoint("checkpoint-12", tmp_path)


def test_clean_incomplete_checkpoints_finishes_or_undoes_a_killed_save(tmp_path):
    for name in ("checkpoint-3.old", "checkpoint-3.tmp", "checkpoint-5", "checkpoint-5.old", "checkpoint-6.tmp"):
        (tmp_path / name).mkdir()
    (tmp_path / "checkpoint-3.old" / TRAINING_STATE_NAME).write_text("{}")
    clean_incomplete_checkpoints(tmp_path)
    # killed between the two renames: the replaced checkpoint comes back; after them: the old one goes
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-3", "checkpoint-5"]
    assert (tmp_path / "checkpoint-3" / TRAINING_STATE_NAME).is_file()
    clean_incomplete_checkpoints(tmp_path / "missing")  # a new run's folder does not exist yet


def test_read_checkpoint_state_names_every_differing_option(tmp_path):
    (tmp_path / TRAINING_STATE_NAME).write_text(json.dumps({"step": 4, "config": {"lr": 0.1, "shots": 5}}))
    assert read_checkpoint_state(str(tmp_path), {"lr": 0.1, "shots": 5})["step"] == 4
    with pytest.raises(ValueError, match=r"keys \['lr', 'seed'\] differ \(lr: checkpoint 0.1, now 0.2; seed"):
        read_checkpoint_state(str(tmp_path), {"lr": 0.2, "shots": 5, "seed": 1})


def test_a_checkpoint_outside_the_output_dir_is_warned_about(tmp_path, caplog):
    inside, outside = tmp_path / "run" / "checkpoint-1", tmp_path / "elsewhere" / "checkpoint-1"
    with caplog.at_level(logging.WARNING):
        warn_if_foreign_checkpoint(str(inside), tmp_path / "run")
        assert not caplog.records
        warn_if_foreign_checkpoint(str(outside), tmp_path / "run")
    assert "outside --output_dir" in caplog.text and "pickles" in caplog.text
