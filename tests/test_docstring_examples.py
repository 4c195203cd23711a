"""Every `Example:` in the library's docstrings runs and prints what it shows.

The docstrings follow diffusers' style: examples sit in Markdown code fences, and the closing fence follows the
expected output directly, which plain `doctest` would read as part of that output. The parser below drops fence lines
first. Examples that need the user's own files or the network are marked `# doctest: +SKIP` in place.
"""

from __future__ import annotations

import doctest
import importlib
import pkgutil
import re

import pytest
import torch

import metagan_hub

FENCE = re.compile(r"^[ \t]*```\w*[ \t]*$", re.MULTILINE)
MODULES = ["metagan_hub"] + sorted(m.name for m in pkgutil.walk_packages(metagan_hub.__path__, "metagan_hub."))


class FencedDocTestParser(doctest.DocTestParser):
    def parse(self, string: str, name: str = "<string>"):
        return super().parse(FENCE.sub("", string), name)


def test_fence_lines_are_dropped_before_parsing():
    (example,) = FencedDocTestParser().get_examples(">>> 1 + 1\n2\n```\n")
    assert example.want == "2\n"


@pytest.mark.parametrize("module_name", MODULES)
def test_docstring_examples_run(module_name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # examples that write files write them here
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        module = importlib.import_module(module_name)
        tests = [t for t in doctest.DocTestFinder(parser=FencedDocTestParser()).find(module) if t.examples]
        runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
        failures = []
        for test in tests:
            report: list[str] = []
            if runner.run(test, out=report.append).failed:
                failures.append("".join(report))
    finally:
        torch.set_num_threads(threads)
    assert not failures, "\n".join(failures)
