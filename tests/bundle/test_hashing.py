import math

import pytest

from rlops_plugin.bundle.hashing import canonical_json, check_finite_json, sha256_file, sha256_json
from rlops_plugin.errors import ConfigError


def test_canonical_json_ignores_key_order_and_whitespace():
    assert canonical_json({"b": 1, "a": [1, 2]}) == b'{"a":[1,2],"b":1}'
    assert sha256_json({"b": 1, "a": 2}) == sha256_json({"a": 2, "b": 1})
    assert sha256_json({"a": 1}) != sha256_json({"a": 2})


def test_nan_is_refused_with_the_field_named():
    with pytest.raises(ConfigError, match="cannot be hashed"):
        sha256_json({"x": math.nan})
    with pytest.raises(ConfigError, match=r"cfg\.lr\[1\]"):
        check_finite_json({"lr": [1.0, math.inf]}, "cfg")


def test_sha256_file_matches_known_digest(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"abc")
    assert sha256_file(path) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
