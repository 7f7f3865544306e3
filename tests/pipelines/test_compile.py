"""Compiled component and pipeline YAML: fresh, loadable, and every component documented."""

from __future__ import annotations

import kfp.components
import pytest

from components import COMPONENT_NAMES
from rlops_plugin.pipelines.compile import HEADER, compile_all
from rlops_plugin.pipelines.run import PIPELINES
from tests.conftest import REPO_ROOT

COMPILED = REPO_ROOT / "manifests" / "pipelines"


def test_compiled_yaml_is_fresh(tmp_path):
    fresh = compile_all(tmp_path)
    for path in fresh:
        shipped = COMPILED / path.relative_to(tmp_path)
        assert shipped.exists(), f"{shipped} missing: run `rlops pipeline compile`"
        assert shipped.read_text() == path.read_text(), f"{shipped} is stale: run `rlops pipeline compile`"
        assert shipped.read_text().startswith(HEADER)


@pytest.mark.parametrize("name", COMPONENT_NAMES)
def test_component_yaml_loads_and_is_documented(name):
    component = kfp.components.load_component_from_file(str(COMPILED / "components" / f"{name}.yaml"))
    assert component.name == name.replace("_", "-")
    folder = REPO_ROOT / "components" / name
    assert (folder / "component.py").exists() and (folder / "README.md").exists()
    assert f"rlops_plugin.pipelines.steps.{name}" in (folder / "README.md").read_text()


def test_components_are_thin():
    """Each component body imports inside itself and calls one function of rlops_plugin.pipelines.steps."""
    import ast

    for name in COMPONENT_NAMES:
        tree = ast.parse((REPO_ROOT / "components" / name / "component.py").read_text())
        fn = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == name)
        calls = {c.func.attr for c in ast.walk(fn) if isinstance(c, ast.Call) and isinstance(c.func, ast.Attribute)
                 and isinstance(c.func.value, ast.Name) and c.func.value.id == "steps"}
        assert calls == {name}, f"{name} calls {calls}"
        assert any(isinstance(n, ast.ImportFrom) and n.module == "rlops_plugin.pipelines" for n in fn.body)


@pytest.mark.parametrize("name", PIPELINES)
def test_pipelines_load(name):
    spec = kfp.components.load_component_from_file(str(COMPILED / f"{name}.yaml"))
    assert spec.name == "rlops-" + name.replace("_", "-")
    assert {"model_name", "store", "deployment"} <= set(spec.component_spec.inputs)


@pytest.mark.parametrize("name", ["continuous_improvement", "agent_improvement"])
def test_more_than_one_process_trains_in_a_trainjob_inside_the_exit_handler(name):
    """num_nodes/nproc_per_node default to 1/1 (the in-process train_policy); > 1 picks train_distributed, and
    the branches sit inside the exit handler, so a failed TrainJob is recorded as a failed cycle."""
    import yaml

    spec = yaml.safe_load((COMPILED / f"{name}.yaml").read_text())
    params = spec["root"]["inputDefinitions"]["parameters"]
    assert params["num_nodes"]["defaultValue"] == 1 and params["nproc_per_node"]["defaultValue"] == 1
    assert params["trainjob_json"]["defaultValue"] == ""
    dags = {n: c["dag"]["tasks"] for n, c in spec["components"].items() if "dag" in c}

    def trained_in(component):
        return {t["componentRef"]["name"].removeprefix("comp-").rstrip("-0123456789")
                for t in dags[component].values()}

    branches = [n for n, tasks in dags.items()
                if any("num_nodes" in (t.get("triggerPolicy") or {}).get("condition", "") for t in tasks.values())]
    assert len(branches) == (2 if name == "agent_improvement" else 1)  # the agent cycle: monitored or not
    for branch in branches:
        conditions = {t["componentRef"]["name"]: t["triggerPolicy"]["condition"] for t in dags[branch].values()}
        by_branch = {trained_in(c).pop(): cond for c, cond in conditions.items()}
        assert len(conditions) == 3 and set(by_branch) == {"train-distributed", "train-policy"}
        assert by_branch["train-policy"] == ("!(int(inputs.parameter_values['pipelinechannel--num_nodes']) > 1) && "
                                             "!(int(inputs.parameter_values['pipelinechannel--nproc_per_node']) > 1)")
        parent = next(n for n, tasks in dags.items()
                      if any(t["componentRef"]["name"] == branch for t in tasks.values()))
        assert parent.startswith("comp-exit-handler")
