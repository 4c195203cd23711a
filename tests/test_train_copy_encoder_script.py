"""`scripts/train_copy_encoder.py`: a tiny run end to end (deterministic, the pipeline's own weights unchanged, the
encoder saved as a pipeline component that the near-copy filter uses), and the errors for bad input."""

from __future__ import annotations

import importlib.util
import runpy
from pathlib import Path

import pytest
import torch

from metagan_hub import MetaGANPipeline
from metagan_hub.metrics.classifiers import EvaluationClassifier
from tests.pipelines.test_pipeline_metagan import assert_same_weights, make_pipe

REPO = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("train_copy_encoder", REPO / "scripts" / "train_copy_encoder.py")
script = importlib.util.module_from_spec(spec)
spec.loader.exec_module(script)


def tiny_args(tmp_path: Path, source: Path, out: str, *extra: str):
    argv = ["--pipeline", str(source), "--output_dir", str(tmp_path / out), "--max_classes", "40"]
    argv += ["--num_classes", "4", "--num_epochs", "1", "--block_out_channels", "8,16"]
    return script.parse_args([*argv, "--cache_dir", str(tmp_path / "cache"), *extra])


@pytest.fixture()
def source(tmp_path):
    folder = tmp_path / "source"
    make_pipe().save_pretrained(folder)  # 16x16, 1 channel
    return folder


def test_a_tiny_run_adds_a_deterministic_encoder_and_leaves_the_rest_alone(tmp_path, source):
    out = Path(script.main(tiny_args(tmp_path, source, "a")))
    pipe = MetaGANPipeline.from_pretrained(out)
    original = MetaGANPipeline.from_pretrained(source)
    assert_same_weights(original.generator, pipe.generator)
    assert_same_weights(original.discriminator, pipe.discriminator)
    encoder = pipe.copy_encoder
    assert isinstance(encoder, EvaluationClassifier) and encoder.config.resolution == 16
    assert encoder.num_classes == 4 and list(encoder.config.block_out_channels) == [8, 16]
    assert encoder.head is None  # saved without its linear head: the filter uses the features only
    training = encoder.config.training
    assert training["num_train_images"] == 4 * 20 and training["num_heldout_images"] == 4 * 2
    assert "training classes of class split seed 0" in training["data"]
    assert 0.0 <= encoder.config.heldout_accuracy <= 1.0
    # the same arguments give the same encoder
    again = MetaGANPipeline.from_pretrained(script.main(tiny_args(tmp_path, source, "b"))).copy_encoder
    assert_same_weights(encoder, again)
    # and the filter judges in its features
    z = torch.randn(24, pipe.generator.config.latent_dim, generator=torch.Generator().manual_seed(0))
    references = pipe(batch_size=3, latents=z[:3], output_type="pt").images * 2 - 1
    _, stats = pipe.replace_near_copies(z, references, 1.0, 1.0, torch.Generator().manual_seed(1))
    assert stats["encoder_passes"] >= 24 and stats["discriminator_passes"] == 0


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--num_classes", "0"], "`--num_classes` must be a positive integer, got 0"),
        (["--num_epochs", "-1"], "`--num_epochs` must be a positive integer, got -1"),
        (["--block_out_channels", "8,x"], "`--block_out_channels` must be positive integers"),
    ],
)
def test_bad_arguments_are_refused_naming_the_argument(tmp_path, source, extra, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        tiny_args(tmp_path, source, "out", *extra)


@pytest.mark.parametrize(
    "extra, option, value",
    [
        (["--block_out_channels", "0,-1"], "`--block_out_channels`", "'0,-1'"),
        (["--block_out_channels", "8,0"], "`--block_out_channels`", "'8,0'"),
        (["--block_out_channels", ""], "`--block_out_channels`", "''"),
        (["--class_seed", "-1"], "`--class_seed`", "-1"),
        (["--split_seed", "-1"], "`--split_seed`", "-1"),
        (["--max_classes", "0"], "`--max_classes`", "0"),
        (["--max_classes", "-1"], "`--max_classes`", "-1"),
        (["--max_classes", "2"], "`--max_classes`", "2"),  # too few classes to split
        (["--num_classes", "99999"], "`--num_classes`", "99999"),  # known before anything is rendered
        (["--num_threads", "0"], "`--num_threads`", "0"),
    ],
)
def test_bad_values_are_refused_before_any_work(tmp_path, extra, option, value):
    # the pipeline folder does not exist: nothing is loaded or rendered before these checks
    with pytest.raises(ValueError) as error:
        tiny_args(tmp_path, tmp_path / "missing", "out", *extra)
    assert option in str(error.value) and value in str(error.value)
    assert not (tmp_path / "cache").exists()


def test_the_command_line_exits_2_with_the_message(tmp_path, monkeypatch, capsys):
    argv = ["--pipeline", str(tmp_path / "p"), "--output_dir", str(tmp_path / "out"), "--class_seed", "-1"]
    monkeypatch.setattr("sys.argv", ["train_copy_encoder.py", *argv])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_path(str(REPO / "scripts" / "train_copy_encoder.py"), run_name="__main__")
    assert exit_info.value.code == 2
    assert "error: `--class_seed` must be a non-negative integer, got -1." in capsys.readouterr().err


def test_the_output_must_be_a_new_folder(tmp_path, source):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x.txt").write_text("keep me", encoding="utf-8")
    with pytest.raises(ValueError, match="`--output_dir` .* exists and is not empty"):
        tiny_args(tmp_path, source, "full")
    assert (tmp_path / "full" / "x.txt").read_text(encoding="utf-8") == "keep me"
    with pytest.raises(ValueError, match="`--output_dir` must differ from `--pipeline`"):
        script.parse_args(["--pipeline", str(tmp_path / "new"), "--output_dir", str(tmp_path / "new")])


def test_too_many_classes_or_colour_pipelines_are_refused(tmp_path, source):
    with pytest.raises(ValueError, match="`--num_classes` 400 is more than the"):
        script.main(tiny_args(tmp_path, source, "out", "--num_classes", "400"))
    colour = tmp_path / "colour"
    make_pipe(channels=3).save_pretrained(colour)
    with pytest.raises(ValueError, match="makes 3-channel images"):
        script.main(tiny_args(tmp_path, colour, "out2"))
