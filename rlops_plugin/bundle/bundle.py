"""PolicyBundle: policy, environment spec and reward spec as one versioned, hashed unit.

On disk a bundle is a directory with a ``manifest.json`` that lists every file with its
SHA-256 plus the part hashes (policy, env, reward) and the bundle hash over the three. Lineage
(parent version, dataset digest, trainer) travels with it but does not change what the
bundle *is*, so it is kept out of the bundle hash and covered by the manifest instead.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlops_plugin import plugins
from rlops_plugin._version import __version__
from rlops_plugin.bundle.env_spec import EnvSpec
from rlops_plugin.bundle.hashing import canonical_json, sha256_bytes, sha256_json
from rlops_plugin.bundle.policy import Policy
from rlops_plugin.bundle.reward_spec import RewardSpec
from rlops_plugin.bundle.spaces import check_same_space
from rlops_plugin.bundle.storage import check_name, read_json, safe_path, verified_path
from rlops_plugin.bundle.strict import check_keys
from rlops_plugin.errors import ConfigError, IntegrityError, PluginError

FORMAT_VERSION = 1
MANIFEST_FILE = "manifest.json"
DEFAULT_KIND = "vector"
"""The policy kind of a bundle whose manifest names none (every bundle written before kinds existed)."""
POLICY_CONFIG_FILE = "policy/config.json"
POLICY_WEIGHTS_FILE = "policy/weights.safetensors"
ENV_SPEC_FILE = "env_spec.json"
REWARD_SPEC_FILE = "reward/spec.json"
REWARD_SOURCE_DIR = "reward/source"
LINEAGE_FILE = "lineage.json"
LINEAGE_KEYS = ("parent_version", "parent_bundle_sha", "dataset_digest", "trainer", "trainer_chain",
                "trainer_config", "created_by", "calibration", "judges")


@dataclass
class PolicyBundle:
    """The unit rlops versions: what acts, where, and for which reward."""

    policy: Policy
    env_spec: EnvSpec
    reward_spec: RewardSpec
    lineage: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_keys(self.lineage, LINEAGE_KEYS, "lineage", noun="keys")

    @property
    def kind(self) -> str:
        """The policy kind (``vector`` for torch networks; see ``rlops_plugin.kinds``)."""
        return str(getattr(self.policy, "kind", DEFAULT_KIND))

    @classmethod
    def create(cls, env_spec: EnvSpec, reward_spec: RewardSpec | str = "env",
               architecture: str = "mlp", config: dict[str, Any] | None = None,
               seed: int | None = 0) -> PolicyBundle:
        """A freshly initialized policy for ``env_spec``'s spaces (seeded for reproducibility)."""
        import torch

        if isinstance(reward_spec, str):
            reward_spec = RewardSpec(ref=reward_spec)
        obs_space, act_space = env_spec.spaces()
        if seed is not None:
            torch.manual_seed(seed)
        return cls(Policy(architecture, config or {}, obs_space, act_space), env_spec, reward_spec)

    def check_spaces(self) -> None:
        """Raise ``SpaceMismatchError`` if the policy does not fit the env's spaces."""
        obs_space, act_space = self.env_spec.spaces()
        check_same_space(self.policy.observation_space, obs_space, "policy and env observation spaces")
        check_same_space(self.policy.action_space, act_space, "policy and env action spaces")

    def hashes(self) -> dict[str, str]:
        """Content hashes of the three parts and of the bundle."""
        parts = {"policy": self.policy.sha256(), "env": self.env_spec.sha256(),
                 "reward": self.reward_spec.sha256()}
        return {**parts, "bundle": sha256_json(parts)}

    @property
    def bundle_sha(self) -> str:
        """Hash identifying policy + env + reward together."""
        return self.hashes()["bundle"]

    def with_policy(self, policy: Policy, **lineage: Any) -> PolicyBundle:
        """Same env and reward, a new policy and lineage (what a trainer returns)."""
        if getattr(policy, "kind", DEFAULT_KIND) != self.kind:
            raise ConfigError(f"a {self.kind} bundle cannot take a {getattr(policy, 'kind', DEFAULT_KIND)} policy")
        if self.kind == DEFAULT_KIND:
            check_same_space(self.policy.action_space, policy.action_space, "action spaces")
        return PolicyBundle(policy, self.env_spec, self.reward_spec, dict(lineage))

    def summary(self) -> dict[str, Any]:
        """A JSON-able overview: parts, hashes and lineage (what ``rlops bundle inspect`` prints)."""
        return {
            "hashes": self.hashes(),
            "policy": self.policy.describe(),
            "env_spec": self.env_spec.to_dict(),
            "reward_spec": self.reward_spec.to_dict(),
            "lineage": dict(self.lineage),
        }

    # ----- persistence -------------------------------------------------------------
    def save(self, directory: str | Path) -> dict[str, Any]:
        """Write the bundle into an empty (or new) directory; return the manifest."""
        root = Path(directory)
        if root.exists() and any(root.iterdir()):
            raise ConfigError(f"{root}: bundle directory must be empty")
        kind = _policy_kind(self.kind)
        files: dict[str, bytes] = {
            **kind.save_policy(self.policy),
            ENV_SPEC_FILE: canonical_json(self.env_spec.to_dict()),
            REWARD_SPEC_FILE: canonical_json(self.reward_spec.to_dict()),
            **{f"{REWARD_SOURCE_DIR}/{name}": path.read_bytes()
               for name, path in self.reward_spec.bundle_sources().items()},
            LINEAGE_FILE: canonical_json(self.lineage),
        }
        for name, data in files.items():
            path = root.joinpath(*name.split("/"))
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        manifest = {
            "format_version": FORMAT_VERSION,
            "rlops_version": __version__,
            "files": {name: sha256_bytes(data) for name, data in files.items()},
            "hashes": self.hashes(),
        }
        if self.kind != DEFAULT_KIND:  # vector manifests stay exactly as they were
            manifest["kind"] = self.kind
        (root / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2, sort_keys=True))
        return manifest

    @classmethod
    def load(cls, directory: str | Path, *, expected_manifest_sha256: str | None = None,
             expected_bundle_sha: str | None = None) -> PolicyBundle:
        """Verify every hash, then parse; nothing is imported or unpickled."""
        root = Path(directory)
        manifest_path = safe_path(root, MANIFEST_FILE)
        if not manifest_path.is_file():
            raise IntegrityError(f"{root}: no {MANIFEST_FILE}; not an rlops bundle")
        if expected_manifest_sha256 is not None:
            verified_path(root, MANIFEST_FILE, expected_manifest_sha256)
        manifest = read_json(manifest_path, MANIFEST_FILE)
        kind = _policy_kind(manifest.get("kind", DEFAULT_KIND) if isinstance(manifest, dict) else DEFAULT_KIND)
        files = _check_manifest(manifest, kind.policy_files, getattr(kind, "policy_prefix", None))
        paths = {name: verified_path(root, name, sha) for name, sha in files.items()}

        env_spec_cls, reward_spec_cls = getattr(kind, "spec_classes", (EnvSpec, RewardSpec))
        env_spec = env_spec_cls.from_dict(read_json(paths[ENV_SPEC_FILE], ENV_SPEC_FILE))
        reward_spec = reward_spec_cls.from_dict(read_json(paths[REWARD_SPEC_FILE], REWARD_SPEC_FILE))
        prefix = REWARD_SOURCE_DIR + "/"
        reward_spec.check_bundle_sources({name[len(prefix):]: path for name, path in paths.items()
                                          if name.startswith(prefix)}, REWARD_SOURCE_DIR)
        policy_prefix = getattr(kind, "policy_prefix", None)
        policy = kind.load_policy({name: path for name, path in paths.items()
                                   if name in kind.policy_files or (policy_prefix and name.startswith(policy_prefix))})
        lineage = read_json(paths[LINEAGE_FILE], LINEAGE_FILE)
        if not isinstance(lineage, dict):
            raise IntegrityError(f"{LINEAGE_FILE}: must hold a JSON object")
        bundle = cls(policy, env_spec, reward_spec, lineage)

        recorded = manifest["hashes"]
        actual = bundle.hashes()
        for part in ("policy", "env", "reward", "bundle"):
            if recorded.get(part) != actual[part]:
                raise IntegrityError(f"{MANIFEST_FILE}: {part} hash {actual[part][:12]}... differs from "
                                     f"the recorded {str(recorded.get(part))[:12]}...")
        if expected_bundle_sha is not None and actual["bundle"] != expected_bundle_sha:
            raise IntegrityError(f"bundle hash {actual['bundle'][:12]}... differs from the expected "
                                 f"{expected_bundle_sha[:12]}... (registry tag or MLmodel)")
        return bundle

    def copy_reward_source(self, destination: str | Path) -> Path:
        """Copy the reward's verified source file to ``destination`` (for audit exports)."""
        return Path(shutil.copy(self.reward_spec.verify_source(), destination))


def _policy_kind(name: Any) -> Any:
    """The registered policy kind ``name`` (``rlops_register_policy_kinds``); unknown kinds are refused."""
    if not isinstance(name, str):
        raise IntegrityError(f"{MANIFEST_FILE}: 'kind' must be a string, got {name!r}")
    try:
        return plugins.policy_kinds().get(name).value
    except PluginError as exc:
        raise IntegrityError(f"{MANIFEST_FILE}: policy kind {name!r} is not registered ({exc})") from None


def _check_manifest(manifest: Any, policy_files: tuple[str, ...], policy_prefix: str | None = None) -> dict[str, str]:
    if not isinstance(manifest, dict) or manifest.get("format_version") != FORMAT_VERSION:
        raise IntegrityError(f"{MANIFEST_FILE}: unsupported or missing format_version")
    files = manifest.get("files")
    if not isinstance(files, dict) or not isinstance(manifest.get("hashes"), dict):
        raise IntegrityError(f"{MANIFEST_FILE}: needs 'files' and 'hashes' objects")
    for name in files:
        check_name(name)
    required = {*policy_files, ENV_SPEC_FILE, REWARD_SPEC_FILE, LINEAGE_FILE}
    missing = required - set(files)
    if missing:
        raise IntegrityError(f"{MANIFEST_FILE}: missing entries {sorted(missing)}")
    extra = [n for n in files if n not in required and not n.startswith(REWARD_SOURCE_DIR + "/")
             and not (policy_prefix and n.startswith(policy_prefix))]
    if extra:
        raise IntegrityError(f"{MANIFEST_FILE}: unexpected entries {extra}")
    for name, sha in files.items():
        if not isinstance(sha, str) or len(sha) != 64:
            raise IntegrityError(f"{MANIFEST_FILE}: entry {name!r} has no sha256")
    return files
