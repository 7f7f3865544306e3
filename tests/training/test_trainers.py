"""Every registered trainer passes rlops_plugin.testing.check_trainer (rlops_register_trainers)."""

import dataclasses

import pytest

from rlops_plugin import plugins
from rlops_plugin.errors import ConfigError
from rlops_plugin.testing import check_trainer
from rlops_plugin.testing.trainers import left_leaning_init
from rlops_plugin.training.base import GradientTrainer, field_docs, make_config

TRAINERS = plugins.trainers().names()
VECTOR_TRAINERS = [n for n in TRAINERS if getattr(plugins.trainers().get(n).value, "policy_kind", "vector") == "vector"]
"""check_trainer runs a ChainWalk policy; agent trainers have their own runs (tests/training/test_agent_*.py)."""


def test_builtins_are_registered():
    assert {"bc", "cql", "sim_finetune", "dpo"} <= set(VECTOR_TRAINERS)
    assert {"agent_sft", "agent_dpo", "agent_kto", "agent_grpo"} <= set(TRAINERS) - set(VECTOR_TRAINERS)


@pytest.mark.parametrize("name", VECTOR_TRAINERS)
def test_conformance(name, tmp_path):
    result = check_trainer(name, tmp_path)
    assert result["after"] > result["before"]


@pytest.mark.parametrize("name", TRAINERS)
def test_every_config_field_is_documented(name):
    cls = plugins.trainers().get(name).value
    docs = field_docs(cls.Config)
    missing = [f.name for f in dataclasses.fields(cls.Config) if not docs.get(f.name)]
    assert not missing, f"{name}: undocumented config fields {missing}"


def test_make_config_converts_and_refuses_unknown_keys():
    cls = plugins.trainers().get("cql").value
    cfg = make_config(cls.Config, {"steps": "10", "alpha": "0.5", "reset_head": "false"})
    assert (cfg.steps, cfg.alpha, cfg.reset_head) == (10, 0.5, False)
    with pytest.raises(ConfigError, match=r"unknown fields \['stepz'\]"):
        make_config(cls.Config, {"stepz": 1})
    with pytest.raises(ConfigError, match="cannot read 'ten' as int"):
        make_config(cls.Config, {"steps": "ten"})


def test_gradient_trainer_records_every_n_steps_and_names_missing_config_fields():
    @dataclasses.dataclass
    class Short:
        """Settings without batch_size or lr."""

        steps: int = 3
        """Steps."""

    class Broken(GradientTrainer):
        Config = Short
        data_kind = "simulator"

    with pytest.raises(ConfigError, match=r"needs the fields \['batch_size', 'lr', 'seed', 'torch_threads'\]"):
        Broken().train(left_leaning_init(), None, Short())
    bc = plugins.trainers().get("bc").value
    with pytest.raises(ConfigError, match="needs a transitions dataset, got no dataset"):
        bc().train(left_leaning_init(), None, bc.Config())
