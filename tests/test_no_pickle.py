"""Source-level guard: nothing on any load path can unpickle."""

import ast

import pytest

from tests.conftest import REPO_ROOT

SOURCE_DIRS = ["rlops_plugin", "components", "bench"]
FORBIDDEN_MODULES = {"pickle", "cloudpickle", "dill", "joblib", "shelve", "marshal"}


def _sources():
    for folder in SOURCE_DIRS:
        yield from sorted((REPO_ROOT / folder).rglob("*.py"))


def _violations(path):
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in FORBIDDEN_MODULES:
                    yield node.lineno, f"imports {alias.name}"
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in FORBIDDEN_MODULES:
            yield node.lineno, f"imports from {node.module}"
        elif isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            owner = getattr(func.value, "id", "") if isinstance(func, ast.Attribute) else ""
            if name == "load" and owner == "torch":
                ok = any(k.arg == "weights_only" and isinstance(k.value, ast.Constant) and k.value.value is True
                         for k in node.keywords)
                if not ok:
                    yield node.lineno, "torch.load without weights_only=True"
            if name in ("read_pickle", "from_pickle"):
                yield node.lineno, f"calls {name}"


def test_sources_found():
    assert len(list(_sources())) > 10


@pytest.mark.parametrize("path", list(_sources()), ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_no_pickle_on_any_path(path):
    found = list(_violations(path))
    assert not found, f"{path}: {found}"


def test_the_guard_catches_violations(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("import torch\nimport cloudpickle\ntorch.load('x')\ntorch.load('y', weights_only=True)\n")
    found = list(_violations(bad))
    assert (2, "imports cloudpickle") in found and (3, "torch.load without weights_only=True") in found
    assert len(found) == 2
