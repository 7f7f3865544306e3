"""The README's quickstart runs exactly as written."""

import os
import re
import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.integration


def readme_block(heading: str) -> str:
    text = (REPO_ROOT / "README.md").read_text()
    section = text.split(heading, 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, f"no python block after {heading!r}"
    return match.group(1)


def test_quickstart_is_ten_lines_and_runs(tracking, tmp_path):
    code = readme_block("## Quickstart")
    assert len([line for line in code.splitlines() if line.strip()]) <= 10
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          cwd=tmp_path, env={**os.environ, "MLFLOW_TRACKING_URI": tracking})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert re.search(r"\(\d, array\(\[0\.\d+, 0\.\d+\]\)\)", proc.stdout), proc.stdout


def test_readme_names_two_commands():
    text = (REPO_ROOT / "README.md").read_text()
    block = text.split("## Two commands", 1)[1].split("##", 1)[0]
    commands = re.findall(r"^make (\w+)", block, re.M)
    assert commands == ["demo", "test"]
    ci = (REPO_ROOT / ".ci" / "run").read_text()
    assert "make test" in ci
