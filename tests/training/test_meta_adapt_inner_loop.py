"""Meta-training with the inner loop that `adapt()` runs at use time (`MetaLearningConfig.adapt_inner_loop`,
`train_metagan.py --preset adapt`): the preset follows adapt()'s defaults, FreezeD, the diversity term and shot
augmentation reach the inner loop, bad combinations fail early, and a run with them resumes bit-exactly."""

from __future__ import annotations

import inspect
import shutil
from pathlib import Path

import pytest
import torch

from metagan_hub.training.adaptation import adapt_pipeline
from metagan_hub.training.meta_learning import MetaLearner, MetaLearningConfig
from metagan_hub.training.tasks import Task
from tests.testing_utils import load_script, saved_pipeline_weights, tiny_gan

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "train_metagan.py"
TINY = [
    "--dataset", "digits", "--resolution", "16", "--latent_dim", "8", "--block_out_channels", "16,8",
    "--num_val_classes", "1", "--num_test_classes", "2", "--meta_batch_size", "2", "--inner_steps", "5",
    "--num_validation_classes", "0", "--logging_steps", "1",
]  # fmt: skip


train_metagan = load_script("train_metagan_adapt_inner", SCRIPT)


pytestmark = pytest.mark.usefixtures("fresh_accelerate")


def tasks(n: int = 2) -> list[Task]:
    g = torch.Generator().manual_seed(0)
    empty = torch.zeros(0, 1, 16, 16)
    return [Task(i, torch.rand(5, 1, 16, 16, generator=g) * 2 - 1, empty) for i in range(n)]


def test_adapt_inner_loop_follows_adapt_defaults():
    defaults = {k: p.default for k, p in inspect.signature(adapt_pipeline).parameters.items()}
    cfg = MetaLearningConfig.adapt_inner_loop()
    assert cfg.algorithm == "reptile" and cfg.inner_optimizer == "adam"
    assert cfg.inner_lr == defaults["learning_rate"] and cfg.inner_batch_size == defaults["batch_size"]
    assert cfg.inner_r1_interval == defaults["r1_interval"] and cfg.r1_gamma == defaults["r1_gamma"]
    assert cfg.inner_freeze_discriminator_blocks == defaults["freeze_discriminator_blocks"]
    assert cfg.augment == tuple(defaults["augment"]) and cfg.loss == defaults["loss"]
    assert cfg.shot_augment == defaults["shot_augment"]
    assert MetaLearningConfig.adapt_inner_loop(inner_steps=50, diversity_loss="cdc").inner_steps == 50


@pytest.mark.parametrize("method", ["cdc", "mixdl"])
def test_inner_freezed_keeps_the_frozen_meta_blocks_and_the_diversity_term_runs(method):
    g, d = tiny_gan()
    frozen_before = {k: v.clone() for k, v in d.state_dict().items() if k.startswith(("conv_in", "blocks.0"))}
    learner = MetaLearner(g, d, MetaLearningConfig.adapt_inner_loop(inner_steps=3, diversity_loss=method), seed=0)
    logs = learner.meta_step(tasks(), step=0)
    assert f"{method}_g" in logs and logs["nonfinite"] == 0.0
    after = d.state_dict()
    # Reptile moves the meta-weights towards the task copies; FreezeD never changed those blocks there
    assert all(torch.equal(frozen_before[k], after[k]) for k in frozen_before)
    assert any(not torch.equal(v, after[k]) for k, v in tiny_gan()[1].state_dict().items() if k.startswith("fc"))


@pytest.mark.parametrize(
    "options, match",
    [
        ({"algorithm": "fomaml", "inner_freeze_discriminator_blocks": 1}, "inner_freeze_discriminator_blocks"),
        ({"algorithm": "pretrain", "diversity_loss": "cdc"}, "diversity_loss"),
        ({"diversity_loss": "cdc", "inner_batch_size": 2}, "batch_size"),
        ({"diversity_loss": "xyz"}, "diversity_loss"),
        ({"diversity_loss": "dcl", "diversity_weight": -1.0}, "diversity_weight"),
        ({"inner_r1_interval": 0}, "inner_r1_interval"),
        ({"shot_augment": -0.5}, r"`shot_augment`.*between 0 \(off\) and 3, got -0\.5"),
        ({"shot_augment": 3.5}, r"`shot_augment`.*got 3\.5"),
        ({"shot_augment": float("nan")}, r"`shot_augment`.*nan"),
        ({"shot_augment": True}, r"`shot_augment`.*True"),
        ({"algorithm": "pretrain", "shot_augment": 1.0}, r"`shot_augment` needs an inner loop"),
    ],
)
def test_bad_inner_loop_options(options, match):
    with pytest.raises(ValueError, match=match):
        MetaLearningConfig(**options)


def test_inner_shot_augmentation_distorts_the_support_batches_it_trains_on(monkeypatch):
    import metagan_hub.training.meta_learning as meta_learning

    original, seen = meta_learning.random_affine, []

    def spy(images, strength, generator=None):
        seen.append((tuple(images.shape), strength))
        return original(images, strength, generator)

    def step(shot_augment: float) -> dict[str, torch.Tensor]:
        g, d = tiny_gan()
        cfg = MetaLearningConfig.adapt_inner_loop(inner_steps=3, shot_augment=shot_augment)
        MetaLearner(g, d, cfg, seed=0).meta_step(tasks(), step=0)
        return {**g.state_dict(), **{f"d.{k}": v for k, v in d.state_dict().items()}}

    monkeypatch.setattr(meta_learning, "random_affine", spy)
    plain = step(0.0)
    assert seen == []  # off: the support images go in as they are
    augmented = step(1.0)
    assert seen == [((4, 1, 16, 16), 1.0)] * 6  # every inner step of both tasks, at adapt()'s batch size
    assert any(not torch.equal(plain[k], augmented[k]) for k in plain)
    again = step(1.0)
    assert all(torch.equal(augmented[k], again[k]) for k in augmented)  # seeded: reproducible


@pytest.mark.parametrize("method", ["cdc", "dcl", "mixdl", "shot_augment"])
def test_meta_training_with_the_adapt_inner_loop_resumes_bit_exactly(tmp_path, method):
    def run(*extra: str):
        return train_metagan.main(train_metagan.parse_args([*TINY, *extra]))

    option = ["--shot_augment", "1.5"] if method == "shot_augment" else ["--diversity_loss", method]
    common = ["--preset", "adapt", *option, "--max_meta_steps", "3", "--checkpointing_steps", "1"]
    full = tmp_path / "full"
    pipe = run(*common, "--output_dir", str(full))
    training = pipe.card_info["training"]
    assert (training["inner_batch_size"], training["inner_r1_interval"]) == (4, 4)
    if method == "shot_augment":
        assert training["shot_augment"] == 1.5 and training["diversity_loss"] is None
        assert pipe.card_info["meta_learning_config"]["shot_augment"] == 1.5
    else:
        assert training["diversity_loss"] == method and training["shot_augment"] == 0.0
    assert pipe.card_info["meta_learning_config"]["inner_freeze_discriminator_blocks"] == 1

    resumed = tmp_path / "resumed"
    shutil.copytree(full / "checkpoint-2", resumed / "checkpoint-2")
    run(*common, "--output_dir", str(resumed), "--resume_from_checkpoint", "latest")
    # bitwise: the script promises that a resumed run reproduces the uninterrupted one on the same machine
    a, b = saved_pipeline_weights(full), saved_pipeline_weights(resumed)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_pipeline_adapt_defaults_match_adapt_pipeline():
    # MetaGANPipeline.adapt() repeats adapt_pipeline()'s keyword defaults (for its docstring and signature); a default
    # changed in one place only would make the pipeline, the scripts and the "adapt" meta-training preset disagree.
    from metagan_hub import MetaGANPipeline

    library = {k: p.default for k, p in inspect.signature(adapt_pipeline).parameters.items()}
    pipeline = {k: p.default for k, p in inspect.signature(MetaGANPipeline.adapt).parameters.items()}
    shared = sorted(set(library) & set(pipeline) - {"self", "images", "pipeline"})
    assert "r1_gamma" in shared and "learning_rate" in shared
    assert {k: pipeline[k] for k in shared} == {k: library[k] for k in shared}
    assert library["r1_gamma"] == 1.0  # chosen by the few-shot benchmark (bundled checkpoint card)
