import numpy as np
import pytest
import torch

from metagan_hub.data.base import ArrayClassDataset
from metagan_hub.training.tasks import Task, TaskSampler


def make_dataset(counts=(6, 8, 7, 9, 6), resolution=4):
    """Every image is filled with a unique value: class c, image i -> 10 * c + i (so tasks can be traced)."""
    images, offsets = [], [0]
    for c, n in enumerate(counts):
        images.extend(np.full((1, resolution, resolution), 10 * c + i, np.uint8) for i in range(n))
        offsets.append(len(images))
    return ArrayClassDataset(np.stack(images), offsets, [f"class{c}" for c in range(len(counts))],
                             resolution=resolution, channels=1)  # fmt: skip


def ids(task: Task) -> list[int]:
    values = torch.cat([task.support, task.query])[:, 0, 0, 0]
    return [round((v.item() + 1) * 127.5) for v in values]


def key(task: Task):
    return task.class_index, task.image_indices.tolist()


def test_task_shapes_and_content():
    ds = make_dataset()
    task = TaskSampler(ds, shots=3, queries=2, seed=0).sample()
    assert task.support.shape == (3, 1, 4, 4) and task.query.shape == (2, 1, 4, 4)
    assert task.support.dtype == torch.float32 and task.support.min() >= -1 and task.support.max() <= 1
    assert task.class_name == f"class{task.class_index}"
    assert ids(task) == [10 * task.class_index + i for i in task.image_indices.tolist()]
    assert TaskSampler(ds, shots=2).sample().query.shape == (0, 1, 4, 4)


def test_without_replacement_inside_a_task():
    ds = make_dataset()
    sampler = TaskSampler(ds, shots=4, queries=2, seed=1)
    seen_classes = set()
    for task in sampler.sample_batch(200):
        chosen = ids(task)
        assert len(set(chosen)) == 6  # support and query distinct and disjoint
        assert all(v // 10 == task.class_index for v in chosen)
        seen_classes.add(task.class_index)
    assert seen_classes == set(range(5))
    # a class with exactly shots + queries images gets all of them
    full = TaskSampler(make_dataset(counts=(6, 6)), shots=4, queries=2, seed=0).sample()
    assert sorted(full.image_indices.tolist()) == list(range(6))


def test_reproducible_from_seed():
    ds = make_dataset()
    a = [key(t) for t in TaskSampler(ds, 3, 1, seed=7).sample_batch(20)]
    b = [key(t) for t in TaskSampler(ds, 3, 1, seed=7).sample_batch(20)]
    c = [key(t) for t in TaskSampler(ds, 3, 1, seed=8).sample_batch(20)]
    assert a == b and a != c


def test_ranks_draw_different_tasks_that_tile_the_global_stream():
    ds = make_dataset()
    r0 = TaskSampler(ds, 3, 1, seed=3, rank=0, world_size=2)
    r1 = TaskSampler(ds, 3, 1, seed=3, rank=1, world_size=2)
    single = TaskSampler(ds, 3, 1, seed=3)
    for _ in range(3):
        b0, b1 = [key(t) for t in r0.sample_batch(4)], [key(t) for t in r1.sample_batch(4)]
        assert b0 != b1
        assert b0 + b1 == [key(t) for t in single.sample_batch(8)]
    # sample() interleaves: rank r takes global tasks position + r
    s0 = TaskSampler(ds, 3, 1, seed=3, rank=0, world_size=2)
    s1 = TaskSampler(ds, 3, 1, seed=3, rank=1, world_size=2)
    stream = [key(TaskSampler(ds, 3, 1, seed=3).task(g)) for g in range(6)]
    assert [key(s0.sample()) for _ in range(3)] == stream[0::2]
    assert [key(s1.sample()) for _ in range(3)] == stream[1::2]


def test_exact_resume():
    ds = make_dataset()
    sampler = TaskSampler(ds, 2, 2, seed=5, rank=1, world_size=3)
    sampler.sample_batch(3)
    sampler.sample()
    state = sampler.state_dict()
    expected = [key(t) for t in sampler.sample_batch(5)] + [key(sampler.sample())]
    resumed = TaskSampler(ds, 2, 2, seed=5, rank=1, world_size=3)
    resumed.load_state_dict(state)
    assert [key(t) for t in resumed.sample_batch(5)] + [key(resumed.sample())] == expected
    assert resumed.state_dict() == sampler.state_dict()
    with pytest.raises(ValueError, match="seed=5, this one has seed=6"):
        TaskSampler(ds, 2, 2, seed=6).load_state_dict(state)
    with pytest.raises(ValueError, match="shots"):
        TaskSampler(ds, 3, 2, seed=5).load_state_dict(state)
    with pytest.raises(ValueError, match="state_dict"):
        sampler.load_state_dict({})


def test_too_few_images_names_the_class():
    ds = make_dataset(counts=(6, 8, 4))
    with pytest.raises(ValueError, match=r"class 'class2' \(index 2\) has 4 image\(s\).*3 \+ 2 = 5"):
        TaskSampler(ds, shots=3, queries=2)
    TaskSampler(ds, shots=3, queries=1)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"shots": 0}, "shots"),
        ({"queries": -1}, "queries"),
        ({"seed": -1}, "seed"),
        ({"rank": 2, "world_size": 2}, "rank"),
        ({"world_size": 0}, "world_size"),
    ],
)
def test_bad_arguments(kwargs, match):
    args = {"shots": 2, **kwargs}
    with pytest.raises(ValueError, match=match):
        TaskSampler(make_dataset(), **args)
    with pytest.raises(ValueError, match="ClassImageDataset"):
        TaskSampler([1, 2, 3], shots=1)


def test_tasks_from_a_split_view():
    train, val, test = make_dataset(counts=(6,) * 10).split_classes(seed=0, num_val=2, num_test=2)
    sampler = TaskSampler(train, shots=2, queries=1, seed=0)
    for task in sampler.sample_batch(20):
        assert train.class_names[task.class_index] == task.class_name
        assert task.class_name not in val.class_names + test.class_names
        assert ids(task)[0] // 10 == int(task.class_name[5:])
