"""RewardSpec: which reward a policy optimizes, pinned by the SHA-256 of its source.

A reward is a registered name (``"env"``) or an importable ``module:function``, plus JSON
params. The hash of the defining module's source, and of every module of the user's package it
imports (its import closure, found statically), is recorded when the spec is made and checked
again before the function is imported or called, so a policy can never be scored or retrained
under a silently edited reward or reward helper. The bundle stores the source file for audit.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from rlops_plugin import plugins
from rlops_plugin.bundle.hashing import check_finite_json, sha256_file, sha256_json
from rlops_plugin.bundle.references import (
    closure_hashes,
    load_verified,
    module_source_path,
    object_module,
    reference_of,
    source_file_of,
    split_reference,
    verify_closure,
)
from rlops_plugin.bundle.strict import check_keys, load_dataclass
from rlops_plugin.errors import ConfigError, IntegrityError

FORMAT_VERSION = 1
_SAFE_FILE = re.compile(r"^[A-Za-z_][\w.]*\.py$")


@dataclass(frozen=True)
class RewardSpec:
    """A reward definition: reference, params, and the hash of its source."""

    ref: str
    """Registered reward name (``"env"``) or ``"package.module:function"``."""
    params: Mapping[str, Any] = field(default_factory=dict)
    """Keyword parameters passed to the function on every call."""
    source_sha256: str = ""
    """SHA-256 of the defining module's source file (filled in when empty)."""
    source_file: str = ""
    """File name of the source copy stored in the bundle, e.g. ``"my_rewards.py"``."""
    closure: Mapping[str, str] = field(default_factory=dict)
    """``{module: sha256}`` of the user's modules the reward module imports (its helpers and their packages'
    ``__init__.py``), recorded with ``source_sha256``: an edited helper is refused like an edited reward."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "params", dict(self.params))
        object.__setattr__(self, "closure", dict(self.closure))
        check_finite_json(self.params, "reward_spec.params")
        if not self.source_sha256 or not self.source_file:
            path = self.current_source_path()
            if not self.source_sha256:
                object.__setattr__(self, "source_sha256", sha256_file(path))
                if not self.is_registered and not self.closure:  # a new spec: pin its helpers too
                    object.__setattr__(self, "closure", closure_hashes(self.module_name))
            if not self.source_file:
                object.__setattr__(self, "source_file", f"{self.module_name}.py")
        if not _SAFE_FILE.match(self.source_file):
            raise ConfigError(f"reward_spec.source_file {self.source_file!r} is not a plain .py file name")

    @classmethod
    def from_function(cls, fn: Callable[..., float], **params: Any) -> RewardSpec:
        """Spec for a module-level function (not a lambda, not defined in ``__main__``)."""
        object_module(fn)
        return cls(ref=reference_of(fn), params=params)

    @property
    def is_registered(self) -> bool:
        """True when ``ref`` is a plugin-registered name rather than ``module:function``."""
        return ":" not in self.ref

    @property
    def module_name(self) -> str:
        """Module defining the function (for a registered name, the plugin's module)."""
        if self.is_registered:
            return object_module(plugins.rewards().get(self.ref).value)
        return split_reference(self.ref)[0]

    def current_source_path(self) -> Path:
        """Where the defining module's source lies in this environment (not imported)."""
        if self.is_registered:
            return source_file_of(plugins.rewards().get(self.ref).value)
        return module_source_path(self.module_name)

    def verify_source(self) -> Path:
        """Check the installed source against ``source_sha256``; return its path."""
        path = self.current_source_path()
        actual = sha256_file(path)
        if actual != self.source_sha256:
            raise IntegrityError(
                f"reward {self.ref!r}: source {path} has sha256 {actual[:12]}..., the spec expects "
                f"{self.source_sha256[:12]}...; the reward definition changed since the policy was "
                "made. Install the matching version or create a new RewardSpec."
            )
        verify_closure(f"reward {self.ref!r}", dict(self.closure))
        return path

    def bundle_sources(self) -> dict[str, Path]:
        """Verified source files to store in the bundle for audit: ``{file name: path}``."""
        return {self.source_file: self.verify_source()}

    def check_bundle_sources(self, stored: Mapping[str, Path], where: str) -> None:
        """Check the source copies a loaded bundle holds against this spec's hash."""
        path = stored.get(self.source_file)
        if path is None:
            raise IntegrityError(f"reward/spec.json: names source {where}/{self.source_file}, which the manifest lacks")
        if sha256_file(path) != self.source_sha256:
            raise IntegrityError(f"{where}/{self.source_file}: stored reward source does not match "
                                 "reward_spec.source_sha256")

    @cached_property
    def function(self) -> Callable[..., float]:
        """The verified reward function (imported on first use only)."""
        if self.is_registered:
            self.verify_source()
            return plugins.rewards().get(self.ref).value
        return load_verified(self.ref, self.source_sha256, dict(self.closure))

    def __call__(self, **values: Any) -> float:
        """Compute the reward for one transition; a non-finite result is an error."""
        reward = float(self.function(**values, **self.params))
        if not math.isfinite(reward):
            raise ConfigError(f"reward {self.ref!r} returned {reward} for {sorted(values)}")
        return reward

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        out = {"ref": self.ref, "params": dict(self.params), "source_sha256": self.source_sha256,
               "source_file": self.source_file, "format_version": FORMAT_VERSION}
        if self.closure:  # absent for rewards without helpers, so their specs hash as before
            out["closure"] = dict(self.closure)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RewardSpec:
        """Rebuild from JSON without importing or hashing anything."""
        data = dict(data)
        version = data.pop("format_version", FORMAT_VERSION)
        if version != FORMAT_VERSION:
            raise ConfigError(f"reward_spec format_version {version} is not supported")
        check_keys(data, (f.name for f in dataclasses.fields(cls)), "reward_spec")  # typos before the hashes
        if not data.get("source_sha256") or not data.get("source_file"):
            raise ConfigError("reward_spec: stored specs must carry source_sha256 and source_file")
        return load_dataclass(cls, data, "reward_spec")

    def sha256(self) -> str:
        """Content hash of the spec (which includes the source hash)."""
        return sha256_json(self.to_dict())
