"""The Python examples in README.md run as written."""
import os
import re

import pytest

README = os.path.join(os.path.dirname(__file__), "..", "README.md")
BLOCKS = re.findall(r"```python\n(.*?)```", open(README, encoding="utf-8").read(), re.S)


@pytest.mark.parametrize("i", range(len(BLOCKS)))
def test_readme_python_block_runs(i, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    exec(compile(BLOCKS[i], f"README.md python block {i}", "exec"), {})


def test_readme_has_examples():
    assert len(BLOCKS) >= 2


def test_ci_runs_the_readme_test_command():
    readme = open(README, encoding="utf-8").read()
    ci = open(os.path.join(os.path.dirname(__file__), "..", ".ci", "run"), encoding="utf-8").read()
    command = [line for line in ci.splitlines() if "pytest" in line][0].strip()
    assert command in readme
