# Copyright 2026 The metagan_hub developers. Licensed under the Apache License, Version 2.0.
"""
Resumable checkpoints of the training scripts (`scripts/train_metagan.py`, `scripts/train_diffusion_rival.py`).

A checkpoint is a folder `checkpoint-{step}` in the run's `--output_dir`, written by Accelerate's `save_state` (the
scripts' hooks save the models with `save_pretrained`, as safetensors and JSON) plus the script's own files. It is
written as `checkpoint-{step}.tmp`, made complete by `training_state.json` written last, and only then renamed into
place, so a save that is killed half-way is never taken for the latest checkpoint. Weights holding NaN or infinite
values are never written.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from ..hub.safety import check_finite_weights, is_inside

logger = logging.getLogger(__name__)

CHECKPOINT_PREFIX = "checkpoint-"
TRAINING_STATE_NAME = "training_state.json"


def list_checkpoints(output_dir: str | os.PathLike) -> list[tuple[int, str]]:
    """
    The complete checkpoints `(step, path)` in `output_dir`, oldest first. Folders without `training_state.json`
    (e.g. a `.tmp` folder of a save that was killed) are not checkpoints.

    Example:

    ```py
    >>> import tempfile
    >>> from metagan_hub.training.checkpointing import list_checkpoints

    >>> list_checkpoints(tempfile.mkdtemp())
    []
    ```
    """
    output_dir = os.fspath(output_dir)
    if not os.path.isdir(output_dir):
        return []
    found = []
    for name in os.listdir(output_dir):
        match = re.fullmatch(rf"{CHECKPOINT_PREFIX}(\d+)", name)
        path = os.path.join(output_dir, name)
        if match and os.path.isfile(os.path.join(path, TRAINING_STATE_NAME)):
            found.append((int(match.group(1)), path))
    return sorted(found)


def clean_incomplete_checkpoints(output_dir: str | os.PathLike) -> None:
    """
    Finish or undo the checkpoint saves of a run that was killed half-way (call on the main process before training):
    a `checkpoint-N.old` without `checkpoint-N` (killed while replacing a checkpoint of the same step) becomes
    `checkpoint-N` again; `.tmp` folders are incomplete and removed, as are `.old` folders that were replaced.

    Example:

    ```py
    >>> import os, tempfile
    >>> from metagan_hub.training.checkpointing import clean_incomplete_checkpoints

    >>> out = tempfile.mkdtemp()
    >>> os.makedirs(os.path.join(out, "checkpoint-4.tmp"))
    >>> clean_incomplete_checkpoints(out)
    >>> os.listdir(out)
    []
    ```
    """
    output_dir = os.fspath(output_dir)
    if not os.path.isdir(output_dir):
        return
    for name in sorted(os.listdir(output_dir)):
        match = re.fullmatch(rf"({CHECKPOINT_PREFIX}\d+)\.(tmp|old)", name)
        if match is None:
            continue
        path, final = os.path.join(output_dir, name), os.path.join(output_dir, match.group(1))
        if match.group(2) == "old" and not os.path.isdir(final):
            os.replace(path, final)
            logger.info(f"restored {final} from an interrupted save")
        else:
            shutil.rmtree(path, ignore_errors=True)


def resolve_checkpoint(resume_from_checkpoint: str | None, output_dir: str | os.PathLike) -> str | None:
    """
    The checkpoint folder that `--resume_from_checkpoint` names, or `None` to start a new run (no option, or `latest`
    while `output_dir` holds no checkpoint yet). A name such as `checkpoint-500` is also looked for in `output_dir`.

    Raises:
        `FileNotFoundError`: the folder does not exist.
        `ValueError`: the folder is not a complete checkpoint of these scripts (no `training_state.json`).

    Example:

    ```py
    >>> import tempfile
    >>> from metagan_hub.training.checkpointing import resolve_checkpoint

    >>> resolve_checkpoint("latest", tempfile.mkdtemp()) is None  # nothing saved yet: a new run
    True
    ```
    """
    if resume_from_checkpoint is None:
        return None
    output_dir = os.fspath(output_dir)
    if resume_from_checkpoint == "latest":
        checkpoints = list_checkpoints(output_dir)
        if not checkpoints:
            logger.warning(f"--resume_from_checkpoint latest: no checkpoint in {output_dir}; starting a new run.")
            return None
        return checkpoints[-1][1]
    path = os.fspath(resume_from_checkpoint)
    if not os.path.isdir(path) and os.path.isdir(os.path.join(output_dir, path)):
        path = os.path.join(output_dir, path)  # e.g. --resume_from_checkpoint checkpoint-500
    if not os.path.isdir(path):
        raise FileNotFoundError(
            f"--resume_from_checkpoint {resume_from_checkpoint!r}: no such checkpoint folder (looked for it as "
            f"given and inside --output_dir {output_dir!r}). Pass a checkpoint-N folder or 'latest'."
        )
    if not os.path.isfile(os.path.join(path, TRAINING_STATE_NAME)):
        raise ValueError(
            f"--resume_from_checkpoint {path!r} is not a complete training checkpoint (it has no "
            f"{TRAINING_STATE_NAME}); pass a checkpoint-N folder written by this script, or 'latest'."
        )
    return path


def warn_if_foreign_checkpoint(path: str, output_dir: str | os.PathLike) -> None:
    """
    Warn when resuming from a folder outside this run's `output_dir`, i.e. one this run did not create itself. A
    checkpoint folder is trusted input: Accelerate's own state files in it (`random_states_*.pkl`, optimizer states)
    are pickles that `load_state` unpickles.
    """
    if not is_inside(path, output_dir):
        logger.warning(
            f"resuming from {path!r}, which is outside --output_dir {os.fspath(output_dir)!r}. Checkpoint folders are "
            "trusted input: Accelerate's state files in them are pickles and can run code when loaded. Resume only "
            "from checkpoints you created."
        )


def config_differences(
    saved: Mapping[str, Any],
    current: Mapping[str, Any],
    defaults: Mapping[str, Any] | None = None,
    ignore: Sequence[str] = (),
) -> dict[str, tuple[Any, Any]]:
    """
    The options on which two configurations disagree, `{key: (saved value, current value)}` in key order; a key
    missing on one side reads as its value in `defaults` (else `None`). Keys in `ignore` are left out. What resuming
    checks compare (a checkpoint's configuration against this run's); each caller words its own error.

    Example:

    ```py
    >>> from metagan_hub.training.checkpointing import config_differences

    >>> config_differences({"shots": 5, "seed": 0}, {"shots": 10, "seed": 0, "steps": 3}, defaults={"steps": 3})
    {'shots': (5, 10)}
    ```
    """
    defaults = defaults or {}
    differences = {}
    for key in sorted(set(saved) | set(current)):
        old, new = saved.get(key, defaults.get(key)), current.get(key, defaults.get(key))
        if key not in ignore and old != new:
            differences[key] = (old, new)
    return differences


def read_checkpoint_state(path: str, config: Mapping[str, Any]) -> dict[str, Any]:
    """
    The training state (`training_state.json`) of checkpoint `path`, after checking that the run that wrote it had
    the same configuration `config` (the state's `"config"`).

    Raises:
        `ValueError`: a key of the configuration differs; the message names each key with both values.

    Example:

    ```py
    >>> import json, os, tempfile
    >>> from metagan_hub.training.checkpointing import TRAINING_STATE_NAME, read_checkpoint_state

    >>> folder = tempfile.mkdtemp()
    >>> with open(os.path.join(folder, TRAINING_STATE_NAME), "w") as f:
    ...     json.dump({"step": 2, "config": {"shots": 5}}, f)
    >>> read_checkpoint_state(folder, {"shots": 5})["step"]
    2
    >>> read_checkpoint_state(folder, {"shots": 10})
    Traceback (most recent call last):
    ...
    ValueError: ... is a checkpoint from another configuration: keys ['shots'] differ (shots: checkpoint 5, now 10)...
    ```
    """
    with open(os.path.join(path, TRAINING_STATE_NAME), encoding="utf-8") as f:
        state = json.load(f)
    differ = config_differences(state.get("config", {}), config)
    if differ:
        details = "; ".join(f"{k}: checkpoint {old!r}, now {new!r}" for k, (old, new) in differ.items())
        raise ValueError(
            f"{path} is a checkpoint from another configuration: keys {list(differ)} differ ({details}). Resume with "
            "the original options, or start a new run in another --output_dir."
        )
    return state


def save_checkpoint(
    accelerator: Any,
    output_dir: str | os.PathLike,
    state: Mapping[str, Any],
    models: Mapping[str, torch.nn.Module],
    extra_json: Mapping[str, Any] | None = None,
    total_limit: int | None = None,
) -> str:
    """
    Write checkpoint `checkpoint-{state["step"]}` of a run in `output_dir` and return its path.

    Every process calls it (Accelerate's `save_state` writes every process's RNG state). The models are checked
    first: if a weight holds NaN or infinite values nothing is written and
    [`~metagan_hub.hub.safety.NonFiniteWeightsError`] is raised, so the latest checkpoint stays the last good one.
    Then `checkpoint-{step}.tmp` is filled by `accelerator.save_state`, the main process adds each
    `extra_json` file (`{file name: JSON-able object}`, strict JSON) and `training_state.json` (`state`) last, and
    renames the folder into place, replacing a checkpoint of the same step (e.g. of a run restarted in the same
    `output_dir`) only after the new one is complete. With `total_limit`, the oldest checkpoints beyond that number
    are removed.

    Args:
        accelerator (`accelerate.Accelerator`): the run's accelerator, with its save hooks registered.
        output_dir (`str` or `os.PathLike`): the run's output folder.
        state (`Mapping[str, Any]`): the script's training state, JSON-able, with an integer `"step"`.
        models (`Mapping[str, torch.nn.Module]`): the trained models by name, checked for non-finite weights.
        extra_json (`Mapping[str, Any]`, *optional*): more JSON files for the checkpoint folder.
        total_limit (`int`, *optional*): how many checkpoints to keep.

    Example:

    ```py
    >>> import tempfile
    >>> import torch
    >>> from accelerate import Accelerator
    >>> from metagan_hub.training.checkpointing import list_checkpoints, save_checkpoint

    >>> accelerator, out = Accelerator(cpu=True), tempfile.mkdtemp()
    >>> model = torch.nn.Linear(2, 2)
    >>> path = save_checkpoint(accelerator, out, {"step": 3}, {"model": model})
    >>> [step for step, _ in list_checkpoints(out)]
    [3]
    ```
    """
    step = int(state["step"])
    check_finite_weights(dict(models), action=f"save checkpoint {step}")
    final = os.path.join(os.fspath(output_dir), f"{CHECKPOINT_PREFIX}{step}")
    tmp = final + ".tmp"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        os.makedirs(tmp)
    accelerator.wait_for_everyone()
    accelerator.save_state(tmp, safe_serialization=True)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        for name, data in (extra_json or {}).items():
            with open(os.path.join(tmp, name), "w", encoding="utf-8") as f:
                json.dump(data, f, indent=2, allow_nan=False)
        with open(os.path.join(tmp, TRAINING_STATE_NAME), "w", encoding="utf-8") as f:  # written last
            json.dump(dict(state), f, indent=2)
            f.flush()
            os.fsync(f.fileno())
        if os.path.exists(final):
            old = final + ".old"
            shutil.rmtree(old, ignore_errors=True)
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
        if total_limit is not None:
            checkpoints = list_checkpoints(output_dir)
            for _, path in checkpoints[: max(0, len(checkpoints) - total_limit)]:
                logger.info(f"removing old checkpoint {path}")
                shutil.rmtree(path, ignore_errors=True)
        logger.info(f"saved {final}")
    accelerator.wait_for_everyone()
    return final
