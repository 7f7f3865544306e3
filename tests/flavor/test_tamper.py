"""Every way a saved model can be tampered with is refused before anything executes."""

from __future__ import annotations

import io
import json
import os
import pickle
import re
import struct
import sys
import zipfile
from pathlib import Path

import pytest
import torch
import yaml

from rlops_plugin import EnvSpec, PolicyBundle, RewardSpec, flavor
from rlops_plugin.bundle.hashing import sha256_file, sha256_json
from rlops_plugin.errors import IntegrityError, RLOpsError, UnsafeArtifactError

WEIGHTS = "bundle/policy/weights.safetensors"


class _Touch:
    """Unpickling this creates a marker file: proof that attacker code ran."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.fixture
def model_dir(tmp_path, cartpole_bundle) -> Path:
    path = tmp_path / "model"
    flavor.save_model(cartpole_bundle, path)
    return path


@pytest.fixture
def marker(tmp_path) -> Path:
    return tmp_path / "ATTACKER_CODE_RAN"


def reseal(model_dir: Path, *, hashes: bool = False) -> None:
    """What a careful attacker does: recompute the manifest and the MLmodel hash."""
    bundle_dir = model_dir / "bundle"
    manifest = json.loads((bundle_dir / "manifest.json").read_text())
    for name in manifest["files"]:
        manifest["files"][name] = sha256_file(bundle_dir / name)
    if hashes:
        env = json.loads((bundle_dir / "env_spec.json").read_text())
        manifest["hashes"]["env"] = sha256_json(env)
        parts = {k: manifest["hashes"][k] for k in ("policy", "env", "reward")}
        manifest["hashes"]["bundle"] = sha256_json(parts)
    (bundle_dir / "manifest.json").write_text(json.dumps(manifest))
    mlmodel = yaml.safe_load((model_dir / "MLmodel").read_text())
    mlmodel["flavors"]["rlops"]["manifest_sha256"] = sha256_file(bundle_dir / "manifest.json")
    if hashes:
        mlmodel["flavors"]["rlops"]["bundle_sha"] = manifest["hashes"]["bundle"]
    (model_dir / "MLmodel").write_text(yaml.safe_dump(mlmodel))


def edit_mlmodel(model_dir: Path, fn) -> None:
    mlmodel = yaml.safe_load((model_dir / "MLmodel").read_text())
    fn(mlmodel)
    (model_dir / "MLmodel").write_text(yaml.safe_dump(mlmodel))


def test_flipped_weight_byte(model_dir):
    path = model_dir / WEIGHTS
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match=r"policy/weights.safetensors: sha256 .* does not match the manifest"):
        flavor.load_local_model(model_dir)


@pytest.mark.parametrize("name", ["env_spec.json", "reward/spec.json", "policy/config.json", "lineage.json"])
def test_edited_spec_files(model_dir, name):
    path = model_dir / "bundle" / name
    data = json.loads(path.read_text())
    data["sneaky"] = 1
    path.write_text(json.dumps(data))
    with pytest.raises(IntegrityError, match=f"{name}: sha256 .* does not match"):
        flavor.load_local_model(model_dir)


def test_resealed_spec_edit_is_caught_by_part_hashes(model_dir):
    path = model_dir / "bundle" / "env_spec.json"
    data = json.loads(path.read_text())
    data["params"] = {"length": 5.0}
    path.write_text(json.dumps(data))
    reseal(model_dir)
    with pytest.raises(IntegrityError, match="env hash .* differs from the recorded"):
        flavor.load_local_model(model_dir)


def test_edited_stored_reward_source(model_dir, cartpole_bundle):
    path = model_dir / "bundle" / "reward" / "source" / cartpole_bundle.reward_spec.source_file
    path.write_text(path.read_text() + "\n# changed\n")
    with pytest.raises(IntegrityError, match="reward/source/.* does not match"):
        flavor.load_local_model(model_dir)
    reseal(model_dir)
    with pytest.raises(IntegrityError, match="stored reward source does not match"):
        flavor.load_local_model(model_dir)


def test_edited_installed_reward_module_is_never_imported(tmp_path, monkeypatch, marker):
    code = tmp_path / "code_on_path"
    code.mkdir()
    module = code / "team_reward.py"
    module.write_text("def reward(*, env_reward, **_):\n    return env_reward\n")
    monkeypatch.syspath_prepend(str(code))
    bundle = PolicyBundle.create(EnvSpec(id="CartPole-v1"), RewardSpec(ref="team_reward:reward"))
    flavor.save_model(bundle, tmp_path / "m")
    module.write_text(f"open({str(marker)!r}, 'w').close()\ndef reward(*, env_reward, **_):\n    return -1.0\n")
    sys.modules.pop("team_reward", None)
    loaded = flavor.load_local_model(tmp_path / "m")
    with pytest.raises(IntegrityError, match="reward 'team_reward:reward'|refusing to import"):
        loaded.reward_spec(env_reward=1.0)
    assert not marker.exists()


def test_pickle_instead_of_weights(model_dir, marker):
    (model_dir / WEIGHTS).write_bytes(pickle.dumps(_Touch(marker)))
    with pytest.raises(IntegrityError, match="weights.safetensors: sha256"):
        flavor.load_local_model(model_dir)
    reseal(model_dir)
    with pytest.raises(UnsafeArtifactError, match="weights.safetensors: looks like a pickle"):
        flavor.load_local_model(model_dir)
    assert not marker.exists()


def test_torch_save_archive_instead_of_weights(model_dir, marker):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("archive/data.pkl", pickle.dumps(_Touch(marker)))
    (model_dir / WEIGHTS).write_bytes(buf.getvalue())
    reseal(model_dir)
    with pytest.raises(UnsafeArtifactError, match="looks like a zip \\(torch.save\\) archive"):
        flavor.load_local_model(model_dir)
    assert not marker.exists()


def test_foreign_loader_module_is_refused(model_dir, tmp_path, monkeypatch, marker):
    evil_dir = tmp_path / "evil"
    evil_dir.mkdir()
    (evil_dir / "evil_loader.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    monkeypatch.syspath_prepend(str(evil_dir))
    edit_mlmodel(model_dir, lambda m: m["flavors"]["python_function"].update(loader_module="evil_loader"))
    with pytest.raises(UnsafeArtifactError, match="loader_module is 'evil_loader', expected 'rlops_plugin.flavor'"):
        flavor.load_local_model(model_dir)
    assert not marker.exists()


def test_shipped_code_is_refused(model_dir, marker):
    (model_dir / "code").mkdir()
    (model_dir / "code" / "sitecustomize.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    with pytest.raises(UnsafeArtifactError, match="never ship a code/ directory"):
        flavor.load_local_model(model_dir)
    edit_mlmodel(model_dir, lambda m: m["flavors"]["python_function"].update(code="code"))
    with pytest.raises(UnsafeArtifactError, match="ships code"):
        flavor.load_local_model(model_dir)
    assert not marker.exists()


@pytest.mark.parametrize("bad_name", ["../outside.json", "/etc/passwd", "policy/../../x", "a\\b.json",
                                      "reward/source/../../../outside.json"])
def test_path_traversal_in_manifest(model_dir, bad_name, tmp_path):
    (tmp_path / "outside.json").write_text("{}")
    manifest_path = model_dir / "bundle" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["files"][bad_name] = "0" * 64
    manifest_path.write_text(json.dumps(manifest))
    reseal_mlmodel_only(model_dir)
    with pytest.raises(UnsafeArtifactError, match="unsafe component|relative POSIX"):
        flavor.load_local_model(model_dir)


def reseal_mlmodel_only(model_dir: Path) -> None:
    edit_mlmodel(model_dir, lambda m: m["flavors"]["rlops"].update(
        manifest_sha256=sha256_file(model_dir / "bundle" / "manifest.json")))


def test_data_path_traversal_in_mlmodel(model_dir):
    edit_mlmodel(model_dir, lambda m: m["flavors"]["rlops"].update(data="../elsewhere"))
    with pytest.raises(UnsafeArtifactError, match="must point at data path 'bundle'"):
        flavor.load_local_model(model_dir)


def test_symlinked_weights_are_refused(model_dir, tmp_path):
    target = tmp_path / "other.safetensors"
    target.write_bytes((model_dir / WEIGHTS).read_bytes())
    os.remove(model_dir / WEIGHTS)
    os.symlink(target, model_dir / WEIGHTS)
    with pytest.raises(UnsafeArtifactError, match="symbolic link"):
        flavor.load_local_model(model_dir)


def test_edited_manifest_without_mlmodel(model_dir):
    path = model_dir / "bundle" / "manifest.json"
    path.write_text(path.read_text().replace('"format_version": 1', '"format_version": 1, "x": 0'))
    with pytest.raises(IntegrityError, match="manifest.json: sha256 .* does not match"):
        flavor.load_local_model(model_dir)


def test_every_refusal_is_an_rlops_error():
    assert issubclass(IntegrityError, RLOpsError) and issubclass(UnsafeArtifactError, RLOpsError)


def _safetensors(header: bytes, data: bytes = b"") -> bytes:
    return struct.pack("<Q", len(header)) + header + data


@pytest.mark.parametrize("content, reason", [
    (_safetensors(b'{"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}'), "not JSON"),  # not closed
    (_safetensors(b'{"w": [1, 2]}'), "malformed safetensors header entry 'w'"),
    (_safetensors(b'{"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 1600]}}', bytes(16)),
     "malformed safetensors header entry 'w'"),  # byte range past the end of the file
    (_safetensors(b'{"w": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 0]}}'),
     "malformed safetensors header entry 'w'"),
    (_safetensors(b'{"\xff": 1}'), "not JSON"),
    (struct.pack("<Q", 200 << 20) + b'{"w": 1}', "bad header"),  # oversized header length
    (_safetensors(b'{"w": {"dtype": "Q99", "shape": [4], "data_offsets": [0, 16]}}', bytes(16)),
     "not a readable safetensors file"),  # well-formed, but safetensors itself refuses the dtype
])
def test_malformed_safetensors_headers_name_the_file(model_dir, content, reason):
    """A malformed or oversized header is an UnsafeArtifactError naming the file, never a raw SafetensorError."""
    (model_dir / WEIGHTS).write_bytes(content)
    reseal(model_dir)
    with pytest.raises(UnsafeArtifactError, match=rf"policy/weights.safetensors: .*{re.escape(reason)}"):
        flavor.load_local_model(model_dir)


def test_a_header_safetensors_accepts_but_the_weights_do_not_fit_is_refused(model_dir):
    """Well-formed safetensors of the wrong tensors: refused by name, not a torch traceback."""
    from safetensors.torch import save

    (model_dir / WEIGHTS).write_bytes(save({"w": torch.zeros(2)}))
    reseal(model_dir)
    with pytest.raises(RLOpsError, match="weights do not fit architecture"):
        flavor.load_local_model(model_dir)


@pytest.mark.integration
def test_rlops_serve_refuses_malformed_weights_with_a_message(model_dir, tmp_path):
    """``rlops serve`` on a model whose safetensors header is malformed exits 2 with the file named, no traceback."""
    import subprocess

    (model_dir / WEIGHTS).write_bytes(_safetensors(b'{"w": [1, 2]}'))
    reseal(model_dir)
    done = subprocess.run([sys.executable, "-m", "rlops_plugin.cli", "serve", str(model_dir), "--store",
                           f"sqlite:///{tmp_path / 'log.db'}", "--http_port", "0"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert "UnsafeArtifactError: policy/weights.safetensors: malformed safetensors header" in done.stderr
    assert "Traceback" not in done.stderr
