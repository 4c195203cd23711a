# Copyright 2026 The metagan_hub developers. Licensed under the Apache License, Version 2.0.
"""What may leave the machine: finite weights only, no local paths or tokens in configs, cards and sidecars."""

from __future__ import annotations

import copy
import json
import math
import os
import re
import struct
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import torch

# Hub access tokens (`hf_` + 34 letters and digits today; shorter ones are matched too).
TOKEN_PATTERN = re.compile(r"(?<![A-Za-z0-9_])hf_[A-Za-z0-9]{20,}")
# Absolute paths under the usual roots of user data on Linux, macOS and Windows. A path inside a URL is never
# matched: the character before the path must not be a word character, `.`, `:` or `/`.
ABSOLUTE_PATH_PATTERN = re.compile(
    r"(?<![\w.:/~-])(?:/(?:home|Users|root|tmp|private|var|mnt|media|data|work|workspace|scratch|content|opt|srv)"
    r"/[^\s\"'<>()\[\]`|,]*|[A-Za-z]:\\\\?[^\s\"'<>()\[\]`|,]+)"
)
# Files whose text is scanned before an upload (safetensors headers are scanned too).
TEXT_SUFFIXES = (".json", ".md", ".py", ".txt", ".yaml", ".yml", ".cfg", ".toml")
CONFIG_KEYS_TO_STRIP = ("_name_or_path",)


class NonFiniteWeightsError(ValueError):
    """Raised instead of saving or pushing a model whose weights hold NaN or infinite values."""


def is_local_path(value: Any) -> bool:
    """
    Whether `value` names something on this machine rather than a Hub repository: an absolute or home-relative path,
    a `./` or `../` path, a Windows path, a path with more than one `/`, or any path that exists here.

    Example:

    ```py
    >>> from metagan_hub.hub.safety import is_local_path

    >>> is_local_path("/home/me/runs/meta"), is_local_path("org/metagan-kanji-32")
    (True, False)
    ```
    """
    if not isinstance(value, str | os.PathLike):
        return False
    text = os.fspath(value)
    if not text:
        return False
    return (
        os.path.isabs(text)
        or text.startswith((".", "~"))
        or "\\" in text
        or text.count("/") > 1
        or bool(re.match(r"^[A-Za-z]:", text))
        or os.path.exists(text)
    )


def is_inside(path: str | os.PathLike, folder: str | os.PathLike) -> bool:
    """
    Whether `path` is `folder` or lies inside it, symbolic links resolved (neither needs to exist).

    Example:

    ```py
    >>> from metagan_hub.hub.safety import is_inside

    >>> is_inside("runs/a/checkpoint-1", "runs/a"), is_inside("runs/ab", "runs/a")
    (True, False)
    ```
    """
    path, folder = os.path.realpath(path), os.path.realpath(folder)
    return os.path.commonpath([path, folder]) == folder


def public_card_info(card_info: Mapping[str, Any]) -> dict[str, Any]:
    """
    A copy of a pipeline's `card_info` fit to publish: the runtime-only `name_or_path` is dropped, every `base_model`
    (also inside the adaptation / training records) that names a local folder becomes `None` (its folder name is kept
    as `base_model_local_name`), and any other absolute local path value is reduced to its last component.

    Example:

    ```py
    >>> from metagan_hub.hub.safety import public_card_info

    >>> public_card_info({"base_model": "/home/me/meta", "name_or_path": "/home/me/meta"})
    {'base_model': None, 'base_model_local_name': 'meta'}
    ```
    """

    def clean(value: Any) -> Any:
        if isinstance(value, Mapping):
            out: dict[str, Any] = {}
            for key, item in value.items():
                if key == "name_or_path":
                    continue
                if key == "base_model" and is_local_path(item):
                    out[key] = None
                    out["base_model_local_name"] = os.path.basename(os.path.normpath(os.fspath(item)))
                    continue
                out[key] = clean(item)
            return out
        if isinstance(value, list | tuple):
            return [clean(v) for v in value]
        if isinstance(value, str) and (os.path.isabs(value) or ABSOLUTE_PATH_PATTERN.fullmatch(value)):
            return os.path.basename(os.path.normpath(value))
        return value

    return clean(copy.deepcopy(dict(card_info)))


def _nonfinite_tensors(
    modules: Mapping[Any, torch.nn.Module | None],
) -> Iterator[tuple[Any, str, torch.Tensor, torch.Tensor]]:
    """`(component, tensor name, tensor, finite mask)` of every floating-point parameter or buffer of `modules`
    (`None` skipped) that holds a NaN or an infinity, lazily: a caller that stops at the first scans no further."""
    for name, module in modules.items():
        if module is None:
            continue
        for key, tensor in module.state_dict().items():
            if not (tensor.is_floating_point() or tensor.is_complex()) or tensor.numel() == 0:
                continue
            finite = torch.isfinite(tensor.float() if tensor.dtype.itemsize == 1 else tensor)
            if not bool(finite.all()):
                yield name, key, tensor, finite


def weights_are_finite(*modules: torch.nn.Module | None) -> bool:
    """
    Whether every floating-point parameter and buffer of `modules` is finite (no NaN, no infinity); `None` is
    skipped. [`check_finite_weights`] raises instead, naming the tensor.

    Example:

    ```py
    >>> import torch
    >>> from metagan_hub.hub.safety import weights_are_finite

    >>> layer = torch.nn.Linear(2, 2)
    >>> weights_are_finite(layer, None)
    True
    ```
    """
    return next(_nonfinite_tensors(dict(enumerate(modules))), None) is None


def check_finite_weights(modules: Mapping[str, torch.nn.Module | None], action: str = "save") -> None:
    """
    Raise [`NonFiniteWeightsError`] naming the component and tensor if any floating-point parameter or buffer of
    `modules` (`{"generator": model, ...}`) holds NaN or infinite values.

    Example:

    ```py
    >>> import torch
    >>> from metagan_hub.hub.safety import check_finite_weights

    >>> layer = torch.nn.Linear(2, 2)
    >>> check_finite_weights({"generator": layer})  # fine
    >>> with torch.no_grad():
    ...     _ = layer.bias.fill_(float("nan"))
    >>> check_finite_weights({"generator": layer})
    Traceback (most recent call last):
    ...
    metagan_hub.hub.safety.NonFiniteWeightsError: Refusing to save: tensor `bias` of component `generator` ...
    ```
    """
    for name, key, tensor, finite in _nonfinite_tensors(modules):
        raise NonFiniteWeightsError(
            f"Refusing to {action}: tensor `{key}` of component `{name}` holds {int((~finite).sum())} NaN or infinite "
            f"value(s) out of {tensor.numel()}. Nothing was written; fix or re-train the model first."
        )


def strip_local_config_keys(folder: str | os.PathLike, recursive: bool = True) -> list[str]:
    """
    Remove `_name_or_path` (where a component was loaded from, which diffusers writes into every saved config) from
    the `model_index.json` / `config.json` files of a saved folder (and its subfolders when `recursive`). Returns the
    files that were rewritten.
    """
    changed = []
    for root, _, files in os.walk(folder):
        if not recursive and os.path.normpath(root) != os.path.normpath(folder):
            continue
        for file in files:
            if file != "model_index.json" and file != "config.json":
                continue
            path = os.path.join(root, file)
            with open(path, encoding="utf-8") as f:
                try:
                    data = json.load(f)
                except json.JSONDecodeError:
                    continue
            if isinstance(data, dict) and any(k in data for k in CONFIG_KEYS_TO_STRIP):
                for key in CONFIG_KEYS_TO_STRIP:
                    data.pop(key, None)
                with open(path, "w", encoding="utf-8") as f:
                    json.dump(data, f, indent=2, sort_keys=True)
                    f.write("\n")
                changed.append(path)
    return changed


def _safetensors_header(path: str) -> str:
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) < 8:
            return ""
        (length,) = struct.unpack("<Q", raw)
        if length > 100_000_000:
            return ""
        return f.read(length).decode("utf-8", "replace")


def _machine_paths() -> list[str]:
    """Absolute paths of this machine that must never be published: home, temporary and working folders."""
    candidates = [os.path.expanduser("~"), tempfile.gettempdir(), os.getcwd()]
    return sorted({p for p in candidates if os.path.isabs(p) and len(p.strip("/\\")) >= 4}, key=len, reverse=True)


def find_local_data(
    folder: str | os.PathLike, files: Iterable[str] | None = None, token: str | None = None
) -> list[str]:
    """
    Scan what an upload of `folder` would publish (configs, model cards, JSON sidecars, `.py` files and safetensors
    headers) for absolute local paths and Hub tokens. Returns one line per finding (`"<file>: <what>"`, tokens
    redacted); an empty list means nothing was found.

    Args:
        folder (`str` or `os.PathLike`): the folder to upload.
        files (`Iterable[str]`, *optional*): the paths (relative to `folder`) that will be uploaded; all files when
            not given.
        token (`str`, *optional*): the token used for the upload, also looked for verbatim.
    """
    folder = os.fspath(folder)
    if files is None:
        files = [os.path.relpath(os.path.join(root, f), folder) for root, _, names in os.walk(folder) for f in names]
    machine = _machine_paths()
    findings = []
    for rel in sorted(files):
        path = os.path.join(folder, rel)
        if rel.endswith(".safetensors"):
            text = _safetensors_header(path)
        elif rel.endswith(TEXT_SUFFIXES) or os.path.basename(rel) == ".gitattributes":
            with open(path, encoding="utf-8", errors="replace") as f:
                text = f.read()
        else:
            continue
        if token and token in text:
            findings.append(f"{rel}: the Hub token in use")
        for match in TOKEN_PATTERN.finditer(text):
            findings.append(f"{rel}: a Hub token ({match.group(0)[:5]}...)")
        hits = {m.group(0) for m in ABSOLUTE_PATH_PATTERN.finditer(text)}
        hits |= {p for p in machine if re.search(r"(?<![\w.:/~-])" + re.escape(p) + r"(?![\w.-])", text)}
        for hit in sorted(hits):
            findings.append(f"{rel}: local path {hit!r}")
    return findings


def replace_nonfinite(data: Any, where: str = "") -> tuple[Any, list[str]]:
    """
    A copy of `data` (nested dicts / lists) with every NaN or infinite float replaced by `None`, and the keys where
    that happened (`"adaptation.final_d_loss"`, ...), so that it can be written as strict JSON (`allow_nan=False`).

    Example:

    ```py
    >>> from metagan_hub.hub.safety import replace_nonfinite

    >>> replace_nonfinite({"loss": float("inf"), "steps": [1.0, float("nan")]})
    ({'loss': None, 'steps': [1.0, None]}, ['loss', 'steps[1]'])
    ```
    """
    found: list[str] = []

    def walk(value: Any, path: str) -> Any:
        if isinstance(value, float) and not math.isfinite(value):
            found.append(path)
            return None
        if isinstance(value, Mapping):
            return {k: walk(v, f"{path}.{k}" if path else str(k)) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [walk(v, f"{path}[{i}]") for i, v in enumerate(value)]
        return value

    return walk(data, where), found


def write_json_strict(data: Any, path: str | os.PathLike) -> list[str]:
    """Write `data` as strict JSON (`allow_nan=False`); non-finite floats become `null`. Returns where they were."""
    clean, found = replace_nonfinite(data)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(clean, f, indent=2, default=str, allow_nan=False)
        f.write("\n")
    return found
