"""Every `Example:` in the library's docstrings runs and prints what it shows.

The docstrings follow diffusers' style: examples sit in Markdown code fences, and the closing fence follows the
expected output directly, which plain `doctest` would read as part of that output. The parser below drops fence lines
first. Examples that need the user's own files or the network are marked `# doctest: +SKIP` in place; examples that
need something the README's test command does not install (system fonts) are listed in `REQUIREMENTS` and skip, with
the reason, where it is missing (`.ci/run` runs them again with the fonts installed).

Examples run in an empty temporary working directory, with `tempfile`'s folder beside it; the render cache and the
Hugging Face home are temporary folders of the test session (`tests/conftest.py`), so whatever they write lands there.
"""

from __future__ import annotations

import doctest
import importlib
import pkgutil
import re
import tempfile
from collections.abc import Callable

import pytest

import metagan_hub
from tests.testing_utils import missing_cjk_fonts, one_thread_fresh_accelerate

FENCE = re.compile(r"^[ \t]*```\w*[ \t]*$", re.MULTILINE)
MODULES = ["metagan_hub"] + sorted(m.name for m in pkgutil.walk_packages(metagan_hub.__path__, "metagan_hub."))
# docstring (doctest name) -> check returning why its example cannot run here, or None when it can
REQUIREMENTS: dict[str, Callable[[], str | None]] = {
    "metagan_hub.data.fonts.FontGlyphDataset": missing_cjk_fonts,
}


class FencedDocTestParser(doctest.DocTestParser):
    def parse(self, string: str, name: str = "<string>"):
        return super().parse(FENCE.sub("", string), name)


def test_fence_lines_are_dropped_before_parsing():
    (example,) = FencedDocTestParser().get_examples(">>> 1 + 1\n2\n```\n")
    assert example.want == "2\n"


def find_examples(module_name: str) -> list[doctest.DocTest]:
    module = importlib.import_module(module_name)
    return [t for t in doctest.DocTestFinder(parser=FencedDocTestParser()).find(module) if t.examples]


def test_requirements_name_existing_examples():
    names = {t.name for module_name in MODULES for t in find_examples(module_name)}
    assert set(REQUIREMENTS) <= names, sorted(set(REQUIREMENTS) - names)


@pytest.mark.parametrize("module_name", MODULES)
def test_docstring_examples_run(module_name, tmp_path, monkeypatch):
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)  # examples that write files write them here
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))  # tempfile.mkdtemp() in examples: here too
    failures, skipped = [], []
    with one_thread_fresh_accelerate():  # examples that make an Accelerator leave no state behind
        runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
        for test in find_examples(module_name):
            reason = REQUIREMENTS[test.name]() if test.name in REQUIREMENTS else None
            if reason is not None:
                skipped.append(f"{test.name}: {reason}")
                continue
            report: list[str] = []
            if runner.run(test, out=report.append).failed:
                failures.append("".join(report))
    assert not failures, "\n".join(failures)
    if skipped:
        pytest.skip("; ".join(skipped))
