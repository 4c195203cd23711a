"""`scripts/train_eval_classifiers.py`: bad options are refused by `parse_args`, naming the option and the value,
before any data is rendered or a classifier trained; the limits are the library's (the build itself is tested in
tests/metrics/test_classifiers.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from metagan_hub.metrics.domains import get_evaluation_domain
from tests.testing_utils import load_script

script = load_script(
    "train_eval_classifiers_script", Path(__file__).resolve().parents[1] / "scripts" / "train_eval_classifiers.py"
)


@pytest.mark.parametrize(
    "argv, option, value",
    [
        (["--num_threads", "0"], "--num_threads", "0"),
        (["--num_threads", "-1"], "--num_threads", "-1"),
        (["--resolution", "0"], "--resolution", "0"),
        (["--resolution", "-1"], "--resolution", "-1"),
        (["--resolution", "7"], "--resolution", "7"),
        (["--channels", "0"], "--channels", "0"),
        (["--channels", "2"], "--channels", "2"),
        (["--num_epochs", "0"], "--num_epochs", "0"),
        (["--num_epochs", "-1"], "--num_epochs", "-1"),
        (["--domain", "kanji", "--num_classes", "-1"], "--num_classes", "-1"),
        (["--domain", "kanji", "--num_classes", "0"], "--num_classes", "0"),
        (["--domain", "fonts", "--num_classes", "1"], "--num_classes", "1"),
        (["--num_classes", "1"], "--num_classes", "1"),  # all domains, fonts among them
        (["--domain", "digits", "--num_classes", "5"], "--num_classes", "5"),  # digits takes no --num_classes
        (["--domain", "bogus"], "--domain", "bogus"),
    ],
)
def test_bad_values_are_refused_naming_option_and_value(argv, option, value, capsys):
    with pytest.raises(SystemExit) as exit_info:
        script.parse_args(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert option in err and value in err, err


def test_the_lowest_allowed_values_are_accepted():
    args = script.parse_args(["--resolution", "8", "--channels", "3", "--num_epochs", "1", "--num_threads", "1"])
    assert (args.resolution, args.channels, args.num_epochs, args.num_threads) == (8, 3, 1, 1)
    assert script.parse_args(["--resolution", "12"]).resolution == 12  # no power of two needed
    assert script.parse_args(["--domain", "kanji", "--num_classes", "1"]).num_classes == 1
    assert script.parse_args(["--domain", "fonts", "--num_classes", "2"]).num_classes == 2


@pytest.mark.parametrize("resolution, channels, accepted", [(8, 1, True), (12, 3, True), (7, 1, False), (8, 2, False)])
def test_parse_args_refuses_exactly_what_the_library_refuses(resolution, channels, accepted):
    argv = ["--domain", "digits", "--resolution", str(resolution), "--channels", str(channels)]
    try:
        get_evaluation_domain("digits", resolution=resolution, channels=channels)
        library_accepts = True
    except ValueError:
        library_accepts = False
    try:
        script.parse_args(argv)
        script_accepts = True
    except SystemExit:
        script_accepts = False
    assert script_accepts == library_accepts == accepted
