"""The package list in pyproject.toml covers every subpackage (a missing one installs from an editable checkout but is
absent from the wheel and sdist users get), and the model-card templates ship as package data."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    tomllib = pytest.importorskip("tomli")


def _pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))


def test_every_subpackage_is_listed():
    listed = set(_pyproject()["tool"]["setuptools"]["packages"])
    on_disk = {".".join(init.parent.relative_to(REPO).parts) for init in (REPO / "metagan_hub").rglob("__init__.py")}
    assert on_disk - listed == set(), "add these to [tool.setuptools] packages in pyproject.toml"
    assert listed - on_disk == {"metagan_hub._model_cards"}


def test_model_card_templates_are_package_data():
    config = _pyproject()["tool"]["setuptools"]
    assert config["package-dir"]["metagan_hub._model_cards"] == "model_cards"
    assert "*.md" in config["package-data"]["metagan_hub._model_cards"]
    assert {p.name for p in (REPO / "model_cards").glob("*.md")} >= {"pipeline.md", "lora.md"}
    assert (REPO / "model_cards" / "__init__.py").is_file()
