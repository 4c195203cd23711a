# Copyright 2026 The metagan_hub developers. Licensed under the Apache License, Version 2.0.
"""Few-shot task sampling: a task is one class with K support and Q query images drawn without replacement.

Tasks form one global, reproducible stream: task number `g` is drawn from a `torch.Generator` seeded from
`(seed, g)` alone. Each process (rank) of a distributed run takes its own disjoint share of that stream, so
different ranks draw different tasks, and the tasks of a meta step are the same whatever the number of processes
(`sample_batch(n)` on `world_size` ranks covers the same global tasks as `sample_batch(n * world_size)` on one).
The sampler's only state is the position in the stream, which makes resuming exact.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from ..data.base import ClassImageDataset, uint8_to_float

logger = logging.getLogger(__name__)

_STATE_VERSION = 1


@dataclass
class Task:
    """
    One few-shot task.

    Args:
        class_index (`int`): index of the class in the sampler's dataset.
        support (`torch.Tensor`): float32 `[K, C, H, W]` in [-1, 1], the K "shots".
        query (`torch.Tensor`): float32 `[Q, C, H, W]` in [-1, 1], disjoint from `support` (`Q` may be 0).
        class_name (`str`): name of the class.
        image_indices (`torch.Tensor`, *optional*): indices of the support then query images within the class.
    """

    class_index: int
    support: torch.Tensor
    query: torch.Tensor
    class_name: str = ""
    image_indices: torch.Tensor | None = None


def _check_int(name: str, value: int, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < low:
        raise ValueError(f"`{name}` must be an integer >= {low}, got {value!r}.")
    return int(value)


class TaskSampler:
    """
    Draws few-shot tasks (one class, `shots` support and `queries` query images, all distinct) from a
    [`~metagan_hub.data.ClassImageDataset`], reproducibly and exactly resumable.

    Classes are drawn uniformly. Task number `g` of the global stream depends only on `(seed, g)`; rank `r` of
    `world_size` processes takes tasks `position + r` for [`sample`], or the block `position + r * n ... + n - 1`
    for [`sample_batch`]`(n)`, and every call advances `position` by the tasks drawn on all ranks together. All ranks
    must therefore make the same sequence of calls. Resuming with a different `world_size` continues the same global
    stream.

    Args:
        dataset (`ClassImageDataset`): the classes to draw from (e.g. the training split).
        shots (`int`): support images per task (K >= 1).
        queries (`int`, defaults to 0): query images per task (Q >= 0), disjoint from the support images.
        seed (`int`, defaults to 0): seed of the task stream (a non-negative integer).
        rank (`int`, defaults to 0): index of this process.
        world_size (`int`, defaults to 1): number of processes.
        min_classes (`int`, defaults to 2): fewest classes accepted; meta-training on a single class is meaningless,
            so the default rejects it (pass 1 to sample tasks of a single held-out class).

    Raises:
        `ValueError`: when a class has fewer than `shots + queries` images (naming the class), the dataset has fewer
            than `min_classes` classes, or an argument is out of range.

    Example:

    ```py
    >>> from metagan_hub.data import get_dataset
    >>> from metagan_hub.training.tasks import TaskSampler
    >>> train, _, _ = get_dataset("digits", resolution=16).split_classes(seed=0, num_val=2, num_test=2)
    >>> sampler = TaskSampler(train, shots=5, queries=3, seed=0)
    >>> task = sampler.sample()
    >>> task.support.shape, task.query.shape
    (torch.Size([5, 1, 16, 16]), torch.Size([3, 1, 16, 16]))
    >>> state = sampler.state_dict()
    >>> batch = sampler.sample_batch(4)
    >>> sampler.load_state_dict(state)
    >>> [t.class_index for t in sampler.sample_batch(4)] == [t.class_index for t in batch]
    True
    ```
    """

    def __init__(
        self,
        dataset: ClassImageDataset,
        shots: int,
        queries: int = 0,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        min_classes: int = 2,
    ):
        if not isinstance(dataset, ClassImageDataset):
            raise ValueError(f"`dataset` must be a ClassImageDataset, got {type(dataset).__name__}.")
        self.shots = _check_int("shots", shots, 1)
        self.queries = _check_int("queries", queries, 0)
        self.seed = _check_int("seed", seed, 0)
        self.world_size = _check_int("world_size", world_size, 1)
        self.rank = _check_int("rank", rank, 0)
        if self.rank >= self.world_size:
            raise ValueError(f"`rank` must be smaller than `world_size`={world_size}, got {rank!r}.")
        min_classes = _check_int("min_classes", min_classes, 1)
        num_classes = dataset.num_classes
        names = dataset.class_names
        if num_classes < min_classes:
            raise ValueError(
                f"the dataset has {num_classes} class(es) {names[:5]}, but task sampling for meta-training needs at "
                f"least min_classes={min_classes}: provide more classes (e.g. more class subfolders), or pass "
                "`min_classes=1` to sample tasks of a single class on purpose."
            )
        needed = self.shots + self.queries
        for index in range(num_classes):
            count = dataset.num_images(index)
            if count < needed:
                raise ValueError(
                    f"class {names[index]!r} (index {index}) has {count} image(s), fewer than shots + queries = "
                    f"{self.shots} + {self.queries} = {needed}; lower `shots`/`queries` or remove the class."
                )
        self.dataset = dataset
        self._class_names = names
        self.position = 0

    # -- sampling ----------------------------------------------------------------------------------------------
    def _task_generator(self, global_index: int) -> torch.Generator:
        state = np.random.SeedSequence([self.seed, global_index]).generate_state(1, np.uint64)[0]
        return torch.Generator().manual_seed(int(state))

    def task(self, global_index: int) -> Task:
        """Task number `global_index` of the global stream (independent of rank and position)."""
        global_index = _check_int("global_index", global_index, 0)
        generator = self._task_generator(global_index)
        class_index = int(torch.randint(self.dataset.num_classes, (1,), generator=generator).item())
        num_images = self.dataset.num_images(class_index)
        chosen = torch.randperm(num_images, generator=generator)[: self.shots + self.queries]  # without replacement
        images = uint8_to_float(self.dataset.select_images_uint8(class_index, chosen))  # [K + Q, C, H, W]
        return Task(
            class_index=class_index,
            support=images[: self.shots],
            query=images[self.shots :],
            class_name=self._class_names[class_index],
            image_indices=chosen,
        )

    def sample(self) -> Task:
        """Draw this rank's next task (global task `position + rank`; `position` advances by `world_size`)."""
        task = self.task(self.position + self.rank)
        self.position += self.world_size
        return task

    def sample_batch(self, n: int) -> list[Task]:
        """Draw this rank's next `n` tasks (a block of the global stream; `position` advances by `n * world_size`)."""
        n = _check_int("n", n, 1)
        start = self.position + self.rank * n
        tasks = [self.task(start + j) for j in range(n)]
        self.position += n * self.world_size
        return tasks

    def __iter__(self) -> Iterator[Task]:
        while True:
            yield self.sample()

    # -- checkpointing -----------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """The sampler's position in the task stream and the settings it must be resumed with."""
        return {
            "version": _STATE_VERSION,
            "position": self.position,
            "seed": self.seed,
            "shots": self.shots,
            "queries": self.queries,
            "num_classes": self.dataset.num_classes,
            "world_size": self.world_size,
        }

    def load_state_dict(self, state: dict) -> None:
        """
        Resume from [`state_dict`]: the next tasks are exactly those the saved sampler would have drawn.

        Raises:
            `ValueError`: when the state was saved with a different seed, shots, queries or number of classes.
        """
        if not isinstance(state, dict) or "position" not in state:
            raise ValueError("`state` must be a dict returned by TaskSampler.state_dict().")
        for key in ("seed", "shots", "queries", "num_classes"):
            current = self.dataset.num_classes if key == "num_classes" else getattr(self, key)
            if key in state and state[key] != current:
                raise ValueError(
                    f"cannot resume: the saved task sampler had {key}={state[key]!r}, this one has {key}={current!r}."
                )
        position = _check_int("position", state["position"], 0)
        if state.get("world_size", self.world_size) != self.world_size:
            logger.info(
                "resuming the task stream saved with world_size=%s on world_size=%d",
                state["world_size"],
                self.world_size,
            )
        self.position = position
