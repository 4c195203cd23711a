# Copyright 2026 The metagan_hub developers. Licensed under the Apache License, Version 2.0.
"""The README names only options that exist. Scripts: every `--flag` after `scripts/NAME.py` in a shell block or in
running text, and every backticked `--flag` of the Meta-training section (train_metagan.py), is an option of that
script, and a value given to an option with fixed choices is one of them. Python: every keyword argument of a
pipeline method in its code blocks, and every `name=value` in its text, is a parameter of `MetaGANPipeline`."""

from __future__ import annotations

import ast
import contextlib
import functools
import inspect
import io
import re
from pathlib import Path

import pytest

from tests.testing_utils import load_script

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
FLAG = re.compile(r"--[a-z][a-z0-9_]*")


@functools.cache
def script_help(name: str) -> str:
    """The `--help` text of `scripts/<name>.py`, from its own `parse_args`, in this process."""
    module = load_script(f"readme_check_{name}", ROOT / "scripts" / f"{name}.py")
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        module.parse_args(["--help"])
    return out.getvalue()


def options(help_text: str) -> set[str]:
    return set(FLAG.findall(help_text))


def choices(help_text: str) -> dict[str, set[str]]:
    """`--flag {a,b,c}` in the usage lines: the flag's allowed values."""
    return {flag: set(values.split(",")) for flag, values in re.findall(r"\[?(--[a-z0-9_]+) \{([^}]+)\}", help_text)}


def shell_commands(text: str) -> list[str]:
    """Commands of the README's bash blocks, continuation lines joined, comments dropped."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" #", 1)[0].strip()
            if line and not line.startswith("#"):
                commands += [part.strip() for part in re.split(r"&&|;|\|", line)]
    return commands


def script_uses(text: str) -> list[tuple[str, list[str]]]:
    """`(script name, tokens after it)` for every use of `scripts/NAME.py` in a command and `NAME.py --flag ...` in
    running text."""
    uses = []
    for command in shell_commands(text):
        match = re.search(r"scripts/([a-z_]+)\.py(.*)", command)
        if match:
            uses.append((match.group(1), match.group(2).split()))
    prose = running_text(text)
    for name, rest in re.findall(
        r"`(?:python |accelerate launch )?(?:scripts/)?([a-z_]+)\.py((?: --?[^`\s]+(?: [^`\s-][^`\s]*)?)+)`", prose
    ):
        uses.append((name, rest.split()))
    return uses


def listed_values(prose: str) -> list[str]:
    """`--flag=value` for each backticked value in running text that lists an option's values:
    "`--flag`: `a`, `b` (...) or `c`;" (up to the next `;` or `.`)."""
    return [
        f"{flag}={value}"
        for flag, listing in re.findall(r"`(--[a-z0-9_]+)`: ([^;.]+)", prose)
        for value in re.findall(r"`([^`]+)`", listing)
    ]


def running_text(text: str) -> str:
    """`text` without its fenced code blocks."""
    return re.sub(r"```.*?```", "", text, flags=re.S)


def section(text: str, title: str) -> str:
    return text.split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]


def check_tokens(name: str, tokens: list[str]) -> list[str]:
    """Problems with `tokens` (a command's words after `scripts/<name>.py`)."""
    help_text = script_help(name)
    known, fixed = options(help_text), choices(help_text)
    problems = []
    for i, token in enumerate(tokens):
        flag = token.split("=", 1)[0]
        if not FLAG.fullmatch(flag):
            continue
        if flag not in known:
            problems.append(f"{name}.py has no option {flag}")
        value = token.split("=", 1)[1] if "=" in token else (tokens[i + 1] if i + 1 < len(tokens) else None)
        if flag in fixed and value is not None and not value.startswith("-") and value not in fixed[flag]:
            problems.append(f"{name}.py {flag} {value}: not one of {sorted(fixed[flag])}")
    return problems


def test_readme_script_options_exist():
    uses = script_uses(README.read_text(encoding="utf-8"))
    assert {"demo_adapt", "adapt_metagan", "train_metagan", "benchmark_fewshot"} <= {name for name, _ in uses}
    problems = [
        p for name, tokens in uses if (ROOT / "scripts" / f"{name}.py").is_file() for p in check_tokens(name, tokens)
    ]
    assert not problems, problems


def test_readme_meta_training_flags_exist():
    prose = running_text(section(README.read_text(encoding="utf-8"), "Meta-training"))
    spans = re.findall(r"`(--[^`]+)`", prose)
    assert len(spans) >= 5, spans  # the section lists the script's options in running text
    problems = [p for span in spans for p in check_tokens("train_metagan", span.split())]
    problems += check_tokens("train_metagan", listed_values(prose))
    assert not problems, problems


def test_checker_catches_unknown_options_and_choices():
    assert check_tokens("train_metagan", ["--dataset", "kanjivg", "--learn_inner_lr"]) == []
    assert check_tokens("train_metagan", ["--dataset", "imagefolder"]) == [
        "train_metagan.py --dataset imagefolder: not one of ['digits', 'fonts', 'kanjivg']"
    ]
    assert check_tokens("adapt_metagan", ["--num_stepz", "3"]) == ["adapt_metagan.py has no option --num_stepz"]
    listing = "`--dataset`: `kanjivg`, `imagefolder` (a folder) or `digits`; `--seed`: 0."
    assert listed_values(listing) == ["--dataset=kanjivg", "--dataset=imagefolder", "--dataset=digits"]
    uses = script_uses(
        "```bash\npython scripts/demo_adapt.py \\\n    --output_dir x  # a comment --not_a_flag\n```\n"
        "Text with `adapt_metagan.py --variety` in it."
    )
    assert uses == [("demo_adapt", ["--output_dir", "x"]), ("adapt_metagan", ["--variety"])]


PIPELINE_METHODS = ("adapt", "__call__", "save_pretrained", "push_to_hub", "save_lora_weights", "load_lora_weights")
RETURNS_PIPELINE = {"adapt", "from_pretrained", "load_lora_weights"}


def pipeline_parameters() -> dict[str, set[str] | None]:
    """Keyword names of `MetaGANPipeline`'s user-facing methods; `None` where a method also takes `**kwargs`."""
    from metagan_hub import MetaGANPipeline

    names = {}
    for method in PIPELINE_METHODS:
        params = inspect.signature(getattr(MetaGANPipeline, method)).parameters.values()
        open_ended = any(p.kind is p.VAR_KEYWORD for p in params)
        names[method] = None if open_ended else {p.name for p in params} - {"self"}
    return names


def python_keyword_uses(text: str) -> list[tuple[str, str]]:
    """`(method, keyword)` for each keyword argument of a pipeline method call in the README's Python blocks: calls
    of an attribute named like a method, and calls of a variable that holds a pipeline (assigned from `adapt`,
    `from_pretrained` or `load_lora_weights`) as `__call__`."""
    uses = []
    for block in re.findall(r"```python\n(.*?)```", text, flags=re.S):
        tree = ast.parse(block)
        pipelines = {
            target.id
            for node in ast.walk(tree)
            if isinstance(node, ast.Assign)
            and isinstance(node.value, ast.Call)
            and isinstance(node.value.func, ast.Attribute)
            and node.value.func.attr in RETURNS_PIPELINE
            for target in node.targets
            if isinstance(target, ast.Name)
        }
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            if isinstance(node.func, ast.Attribute) and node.func.attr in PIPELINE_METHODS:
                method = node.func.attr
            elif isinstance(node.func, ast.Name) and node.func.id in pipelines:
                method = "__call__"
            else:
                continue
            uses += [(method, kw.arg) for kw in node.keywords if kw.arg is not None]
    return uses


def test_readme_pipeline_keywords_exist():
    text = README.read_text(encoding="utf-8")
    params = pipeline_parameters()
    uses = python_keyword_uses(text)
    assert {("adapt", "num_steps"), ("__call__", "latent_scale"), ("__call__", "avoid_copies_of")} <= set(uses)
    problems = [f"{m}({k}=...)" for m, k in uses if params[m] is not None and k not in params[m]]
    # options named in running text, `name=value`: a keyword of one of the methods
    known = set().union(*(p for p in params.values() if p is not None)) | {"trust_remote_code"}  # diffusers' loader
    prose = running_text(text)
    named = re.findall(r"`[^`]*?\b([a-z_]+)=[^=]", prose)
    assert "shot_augment" in named and "replacement_spread" in named
    problems += [f"`{k}=` in the text" for k in named if k not in known]
    assert not problems, problems


def test_keyword_checker_sees_calls_of_pipeline_variables():
    text = "```python\np = Pipe.from_pretrained('x')\na = p.adapt(imgs, num_stepz=3)\nimages = a(latent_scal=2)\n```\n"
    assert python_keyword_uses(text) == [("adapt", "num_stepz"), ("__call__", "latent_scal")]
