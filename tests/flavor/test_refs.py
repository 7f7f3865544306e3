"""ModelRef: the one reader and writer of models:/ URIs."""

import pytest

from rlops_plugin.errors import RegistryError
from rlops_plugin.flavor.refs import ModelRef


@pytest.mark.parametrize("text, name, version, alias", [
    ("models:/cartpole@champion", "cartpole", None, "champion"),
    ("models:/cartpole/3", "cartpole", "3", None),
    ("cartpole@champion", "cartpole", None, "champion"),           # the monitor's NAME@ALIAS shorthand
    ("models:/m-lander@champion", "m-lander", None, "champion"),   # a registered name that starts with m-
    ("models:/m-lander/3", "m-lander", "3", None),
    ("models:/m-abc123", None, None, None),                        # a logged model id (MLflow 3)
    ("runs:/abc/policy", None, None, None),
    ("/tmp/model", None, None, None),
])
def test_parse(text, name, version, alias):
    ref = ModelRef.parse(text)
    shorthand = "@" in text and not text.startswith("models:/")
    assert (ref.name, ref.version, ref.alias) == (name, version, alias)
    assert ref.uri == (f"models:/{text}" if shorthand else text)
    assert ref.registered == (name is not None)


def test_build_and_move_between_aliases():
    assert ModelRef.of("cartpole", version=3).uri == "models:/cartpole/3"
    assert ModelRef.of("cartpole", alias="champion").at_alias("previous").uri == "models:/cartpole@previous"
    assert ModelRef("models:/cartpole@champion", "cartpole", "7", "champion").download_uri == "models:/cartpole/7"
    with pytest.raises(RegistryError, match="give a version or an alias"):
        ModelRef.of("cartpole")
    with pytest.raises(RegistryError, match="write models:/NAME@ALIAS"):
        ModelRef.parse("models:/cartpole@")
    with pytest.raises(RegistryError, match="not a registered model URI"):
        ModelRef.parse("runs:/abc/policy").at_alias("champion")
