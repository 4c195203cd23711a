"""`scripts/benchmark_generation.py`: the diffusion baseline's UNet options are checked before any timing (the UNet
is built after the whole Meta-GAN section)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.testing_utils import load_script

REPO = Path(__file__).resolve().parents[1]
generation = load_script("benchmark_generation", REPO / "scripts" / "benchmark_generation.py")


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--unet_block_out_channels", "0"], "--unet_block_out_channels must be positive multiples of 8 (the UNet's"),
        (["--unet_block_out_channels", "-8", "16"], "multiples of 8 (the UNet's GroupNorm groups), got -8 16."),
        (["--unet_block_out_channels", "12", "20"], "multiples of 8 (the UNet's GroupNorm groups), got 12 20."),
        (["--unet_block_out_channels", *["8"] * 7], "gives 7 blocks, but the 32x32 UNet halves its size"),
        (["--unet_block_out_channels", "16", "--unet_layers_per_block", "0"], "must be a positive integer, got 0."),
        (["--unet_block_out_channels", "16", "--unet_layers_per_block", "-1"], "must be a positive integer, got -1."),
        (["--unet_layers_per_block", "-5"], "--unet_layers_per_block must be a positive integer, got -5."),
        (
            ["--unet_layers_per_block", "2"],
            "--unet_layers_per_block 2 sets the UNet given by --unet_block_out_channels",
        ),
    ],
)
def test_bad_unet_options_exit_naming_option_and_value(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        generation.parse_args(argv)
    assert exit_.value.code == 2 and message in capsys.readouterr().err


def test_unet_options_that_build_a_working_unet_are_accepted():
    args = generation.parse_args(["--unet_block_out_channels", *["8"] * 6])
    assert args.unet_layers_per_block == 1  # the default with --unet_block_out_channels
    config = generation.unet_config(generation.UNET_SAMPLE_SIZE, 1, tuple(args.unet_block_out_channels), 1)
    unet = generation.UNet2DModel(**config).eval()  # six blocks halve 32x32 down to 1x1 and back
    sample = generation.torch.randn(2, 1, 32, 32)
    with generation.torch.no_grad():
        assert unet(sample, generation.torch.full((2,), 500)).sample.shape == sample.shape
    assert generation.parse_args([]).unet_layers_per_block is None  # unused by the automatic choice
