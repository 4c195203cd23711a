"""Meta-learned per-tensor inner learning rates (Meta-SGD style, first-order;
`MetaLearningConfig(learn_inner_lr=True)`, `train_metagan.py --learn_inner_lr`): the hypergradient, the bounds, the
export into the pipeline's card info, their use by `adapt()`, bad input, and bit-exact resume."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch

from metagan_hub import MetaGANPipeline
from metagan_hub.training.adaptation import LR_SCALES_KEY, check_lr_scales
from metagan_hub.training.meta_learning import MAX_LR_SCALE, MetaLearner, MetaLearningConfig
from metagan_hub.training.tasks import Task
from tests.testing_utils import load_script, saved_pipeline_weights, tiny_gan

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "train_metagan.py"
TINY = [
    "--dataset", "digits", "--resolution", "16", "--latent_dim", "8", "--block_out_channels", "16,8",
    "--num_val_classes", "1", "--num_test_classes", "2", "--meta_batch_size", "2", "--inner_steps", "3",
    "--num_validation_classes", "0", "--logging_steps", "1",
]  # fmt: skip

train_metagan = load_script("train_metagan_learned_lr", SCRIPT)


pytestmark = pytest.mark.usefixtures("fresh_accelerate")


def tasks(n: int = 2, queries: int = 3) -> list[Task]:
    g = torch.Generator().manual_seed(0)
    return [
        Task(i, torch.rand(5, 1, 16, 16, generator=g) * 2 - 1, torch.rand(queries, 1, 16, 16, generator=g) * 2 - 1)
        for i in range(n)
    ]


@pytest.mark.parametrize("algorithm", ["reptile", "fomaml"])
def test_learned_scales_move_stay_bounded_and_cover_every_tensor(algorithm):
    g, d = tiny_gan()
    cfg = MetaLearningConfig(algorithm=algorithm, inner_steps=2, learn_inner_lr=True, inner_lr_meta_lr=5.0)
    learner = MetaLearner(g, d, cfg, seed=0)
    for step in range(3):
        assert learner.meta_step(tasks(), step=step)["nonfinite"] == 0.0
    scales = learner.lr_scales()
    assert set(scales["generator"]) == {n for n, _ in g.named_parameters()}
    assert set(scales["discriminator"]) == {n for n, _ in d.named_parameters()}
    values = [v for model in scales.values() for v in model.values()]
    assert any(v != 1.0 for v in values)  # they were learned
    # a huge step size drives them to the bounds, never past them
    assert all(1 / MAX_LR_SCALE - 1e-6 <= v <= MAX_LR_SCALE + 1e-6 for v in values)
    bounds = (MAX_LR_SCALE, 1 / MAX_LR_SCALE)
    assert any(math.isclose(v, b, rel_tol=1e-5) for v in values for b in bounds)


def test_hypergradient_is_the_query_gradient_dotted_with_the_displacement():
    g, d = tiny_gan()
    learner = MetaLearner(g, d, MetaLearningConfig(inner_steps=2, learn_inner_lr=True), seed=0)
    learner._load_fast()
    with torch.no_grad():
        for q in learner._fast_g.parameters():
            q.add_(0.5)
    grads_g = [torch.full_like(p, 2.0) for p in learner.g_params]
    grads_d = [torch.zeros_like(p) for p in learner.d_params]
    h = learner._lr_hypergradient(grads_g, grads_d)
    expected_g = torch.tensor([2.0 * 0.5 * p.numel() for p in learner.g_params])
    assert torch.allclose(h[: len(learner.g_params)], expected_g)
    assert torch.equal(h[len(learner.g_params) :], torch.zeros(len(learner.d_params)))


def test_a_query_loss_that_rises_along_the_inner_displacement_lowers_that_tensor_rate():
    g, d = tiny_gan()
    learner = MetaLearner(g, d, MetaLearningConfig(inner_steps=2, learn_inner_lr=True, inner_lr_meta_lr=0.1), seed=0)
    n = learner.log_lr_scales.numel()
    grad = torch.zeros(n)
    grad[0], grad[1] = 1.0, -1.0  # loss rises with tensor 0's step, falls with tensor 1's
    learner._update_lr_scales(grad)
    assert learner.log_lr_scales[0] < 0 < learner.log_lr_scales[1]
    assert torch.equal(learner.log_lr_scales[2:], torch.zeros(n - 2))


def test_scales_of_one_reproduce_the_plain_inner_loop():
    # one parameter group per tensor at inner_lr * 1 is the same arithmetic as one group at inner_lr
    g1, d1 = tiny_gan()
    g2, d2 = tiny_gan()
    plain = MetaLearner(g1, d1, MetaLearningConfig(inner_steps=3), seed=0)
    learned = MetaLearner(g2, d2, MetaLearningConfig(inner_steps=3, learn_inner_lr=True), seed=0)
    plain.meta_step(tasks(), step=0)
    learned.meta_step(tasks(), step=0)
    for a, b in zip([*g1.parameters(), *d1.parameters()], [*g2.parameters(), *d2.parameters()]):
        assert torch.equal(a, b)


def test_set_lr_scales_round_trips_and_checks_names():
    g, d = tiny_gan()
    learner = MetaLearner(g, d, MetaLearningConfig(learn_inner_lr=True), seed=0)
    learner.set_lr_scales({"generator": {"proj.weight": 2.0}, "discriminator": {"fc.weight": 100.0}})
    scales = learner.lr_scales()
    assert math.isclose(scales["generator"]["proj.weight"], 2.0, rel_tol=1e-6)
    assert math.isclose(scales["discriminator"]["fc.weight"], MAX_LR_SCALE, rel_tol=1e-6)  # clamped
    assert scales["generator"]["proj.bias"] == 1.0
    with pytest.raises(ValueError, match="not a parameter of the generator"):
        learner.set_lr_scales({"generator": {"nope.weight": 2.0}})
    with pytest.raises(ValueError, match="learn_inner_lr"):
        MetaLearner(*tiny_gan(), MetaLearningConfig(), seed=0).set_lr_scales({})
    assert MetaLearner(*tiny_gan(), MetaLearningConfig(), seed=0).lr_scales() is None


@pytest.mark.parametrize(
    "options, match",
    [
        ({"algorithm": "pretrain", "learn_inner_lr": True}, "learn_inner_lr"),
        ({"learn_inner_lr": "yes"}, "learn_inner_lr"),
        ({"learn_inner_lr": True, "inner_lr_meta_lr": -1.0}, "inner_lr_meta_lr"),
        ({"learn_inner_lr": True, "inner_lr_meta_lr": float("nan")}, "inner_lr_meta_lr"),
    ],
)
def test_bad_learned_lr_options(options, match):
    with pytest.raises(ValueError, match=match):
        MetaLearningConfig(**options)


def test_learned_lr_needs_query_images():
    learner = MetaLearner(*tiny_gan(), MetaLearningConfig(learn_inner_lr=True), seed=0)
    with pytest.raises(ValueError, match="query images"):
        learner.meta_step(tasks(queries=0), step=0)


@pytest.mark.parametrize(
    "scales, match",
    [
        ([1.0], "must be a dict"),
        ({"mapping": {}}, "unknown model 'mapping'"),
        ({"generator": [1.0]}, r"\['generator'\]` must be a dict"),
        ({"generator": {"proj.weight": 0.0}}, "positive finite"),
        ({"generator": {"proj.weight": float("inf")}}, "positive finite"),
        ({"generator": {"proj.weight": True}}, "positive finite"),
        ({"discriminator": {"proj.weight": 1.0}}, "not a parameter of the discriminator"),
    ],
)
def test_check_lr_scales_names_the_bad_entry(scales, match):
    g, d = tiny_gan()
    names = {"generator": [n for n, _ in g.named_parameters()], "discriminator": [n for n, _ in d.named_parameters()]}
    with pytest.raises(ValueError, match=match):
        check_lr_scales(scales, names)


def adapted_weights(pipe: MetaGANPipeline, **kwargs) -> tuple[MetaGANPipeline, dict[str, torch.Tensor]]:
    shots = torch.rand(5, 1, 16, 16, generator=torch.Generator().manual_seed(1)) * 2 - 1
    out = pipe.adapt(shots, num_steps=3, generator=torch.Generator().manual_seed(0), **kwargs)
    return out, {k: v.clone() for k, v in out.generator.state_dict().items()}


def test_adapt_applies_the_checkpoint_scales_and_can_ignore_them():
    g, d = tiny_gan()
    names = [n for n, _ in g.named_parameters()]
    plain = MetaGANPipeline(generator=g, discriminator=d)
    plain.set_progress_bar_config(disable=True)
    _, reference = adapted_weights(plain)

    ones = {"generator": dict.fromkeys(names, 1.0)}
    with_ones = MetaGANPipeline(generator=g, discriminator=d, card_info={LR_SCALES_KEY: ones})
    with_ones.set_progress_bar_config(disable=True)
    out, same = adapted_weights(with_ones)
    assert out.card_info["adaptation"]["layer_lr_scales"] is True
    assert all(torch.equal(reference[k], same[k]) for k in reference)

    # scale 4 on the projection only: it moves further, tensors without a scale train as before step for step
    four = {LR_SCALES_KEY: {"generator": {"proj.bias": 4.0}}}
    bigger = MetaGANPipeline(generator=g, discriminator=d, card_info=four)
    bigger.set_progress_bar_config(disable=True)
    out, moved = adapted_weights(bigger)
    start = g.state_dict()
    moved_by = {k: (w["proj.bias"] - start["proj.bias"]).abs().sum() for k, w in (("4", moved), ("1", reference))}
    assert moved_by["4"] > moved_by["1"]
    assert out.card_info[LR_SCALES_KEY] == {"generator": {"proj.bias": 4.0}}  # kept for the next adaptation

    out, ignored = adapted_weights(bigger, layer_lr_scales=False)
    assert out.card_info["adaptation"]["layer_lr_scales"] is False
    assert all(torch.equal(reference[k], ignored[k]) for k in reference)

    with pytest.raises(TypeError, match="layer_lr_scales"):
        adapted_weights(bigger, layer_lr_scales="yes")
    broken = MetaGANPipeline(generator=g, discriminator=d, card_info={LR_SCALES_KEY: {"generator": {"x": 1.0}}})
    with pytest.raises(ValueError, match="'x'"):
        adapted_weights(broken)


def test_script_learns_saves_and_resumes_the_scales_bit_exactly(tmp_path):
    def run(*extra: str):
        return train_metagan.main(train_metagan.parse_args([*TINY, *extra]))

    common = ["--preset", "adapt", "--learn_inner_lr", "--max_meta_steps", "3", "--checkpointing_steps", "1"]
    full = tmp_path / "full"
    pipe = run(*common, "--output_dir", str(full))
    assert pipe.card_info["training"]["learn_inner_lr"] is True and pipe.card_info["training"]["queries"] == 5
    saved = json.loads((full / "metagan_hub.json").read_text())[LR_SCALES_KEY]
    assert set(saved) == {"generator", "discriminator"} and any(v != 1.0 for v in saved["generator"].values())

    loaded = MetaGANPipeline.from_pretrained(full)
    assert loaded.card_info[LR_SCALES_KEY] == saved
    loaded.set_progress_bar_config(disable=True)
    adapted = loaded.adapt(torch.zeros(5, 1, 16, 16), num_steps=1, generator=torch.Generator().manual_seed(0))
    assert adapted.card_info["adaptation"]["layer_lr_scales"] is True

    resumed = tmp_path / "resumed"
    shutil.copytree(full / "checkpoint-2", resumed / "checkpoint-2")
    again = run(*common, "--output_dir", str(resumed), "--resume_from_checkpoint", "latest")
    a, b = saved_pipeline_weights(full), saved_pipeline_weights(resumed)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert json.loads((resumed / "metagan_hub.json").read_text())[LR_SCALES_KEY] == saved
    assert again.card_info[LR_SCALES_KEY] == saved

    # continuing from the saved pipeline starts from its scales
    cont = run("--preset", "adapt", "--learn_inner_lr", "--max_meta_steps", "1", "--checkpointing_steps", "0",
               "--init_from", str(full), "--output_dir", str(tmp_path / "cont"))  # fmt: skip
    first = cont.card_info[LR_SCALES_KEY]["generator"]
    # one Adam step of at most inner_lr_meta_lr (0.01) in log scale away from the saved scales
    assert first != saved["generator"]
    assert all(abs(math.log(first[k] / saved["generator"][k])) <= 0.0101 for k in first)


@pytest.mark.parametrize(
    "extra, match",
    [
        (["--learn_inner_lr", "--algorithm", "pretrain"], "needs an inner loop"),
        (["--learn_inner_lr", "--queries", "0"], "--queries >= 1"),
    ],
)
def test_script_refuses_bad_learned_lr_combinations(extra, match, capsys):
    with pytest.raises(SystemExit):
        train_metagan.parse_args([*TINY, *extra, "--output_dir", "unused"])
    assert match in capsys.readouterr().err


def test_a_lora_adapted_pipeline_with_scales_can_be_adapted_again():
    pytest.importorskip("peft")
    g, d = tiny_gan()
    names = [n for n, _ in g.named_parameters()]
    pipe = MetaGANPipeline(
        generator=g, discriminator=d, card_info={LR_SCALES_KEY: {"generator": dict.fromkeys(names, 2.0)}}
    )
    pipe.set_progress_bar_config(disable=True)
    lora, _ = adapted_weights(pipe, lora_rank=2)
    assert lora.has_lora and LR_SCALES_KEY in lora.card_info
    lora.set_progress_bar_config(disable=True)
    again, _ = adapted_weights(lora)  # the LoRA layers' base weights keep their scales
    assert again.card_info["adaptation"]["layer_lr_scales"] is True
