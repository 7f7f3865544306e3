"""Training signal extracted from the decision log: transitions and preference pairs.

A dataset is a directory with a Parquet file of columns and a ``dataset.json`` manifest
(kind, content digest, counts of what was used and what was excluded and why, and the
env/reward hashes it was built under). The digest hashes the column values, not the Parquet
bytes, so it is stable across Parquet writers; loading verifies it. Reading uses pyarrow only
(no pickle).
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from rlops_plugin._version import __version__
from rlops_plugin.bundle.bundle import PolicyBundle
from rlops_plugin.bundle.spaces import space_to_json
from rlops_plugin.errors import ConfigError, IntegrityError, RLOpsError
from rlops_plugin.experience.join import JoinConfig, join_feedback
from rlops_plugin.experience.store import ExperienceStore

FORMAT_VERSION = 1
MANIFEST_FILE = "dataset.json"
DATA_FILE = "data.parquet"
TRANSITION_COLUMNS = ("obs", "action", "propensity", "reward", "next_obs", "done", "episode_id", "step",
                      "policy_version", "decision_id")
PREFERENCE_COLUMNS = ("obs", "chosen", "rejected", "source", "decision_id")


class DatasetError(RLOpsError):
    """A dataset is empty, inconsistent, or was built under another env or reward."""


@dataclass
class Dataset:
    """Columns (numpy arrays, one row per transition or pair) plus a manifest."""

    kind: str
    columns: dict[str, np.ndarray]
    manifest: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(len(next(iter(self.columns.values())))) if self.columns else 0

    @property
    def digest(self) -> str:
        """``sha256:<hex>`` over column names, dtypes, shapes and values."""
        return content_digest(self.columns)

    def save(self, directory: str | Path) -> Path:
        """Write ``data.parquet`` and ``dataset.json`` into ``directory``; return it."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        root = Path(directory)
        root.mkdir(parents=True, exist_ok=True)
        arrays = {name: _to_arrow(values) for name, values in self.columns.items()}
        pq.write_table(pa.table(arrays), root / DATA_FILE)
        self.manifest.update({"format_version": FORMAT_VERSION, "kind": self.kind, "digest": self.digest,
                              "rows": len(self)})
        (root / MANIFEST_FILE).write_text(json.dumps(self.manifest, indent=2, sort_keys=True))
        return root

    @classmethod
    def load(cls, directory: str | Path) -> Dataset:
        """Read a saved dataset and verify its digest."""
        import pyarrow.parquet as pq

        root = Path(directory)
        if not (root / MANIFEST_FILE).is_file():
            raise DatasetError(f"{root}: no {MANIFEST_FILE}; build one with `rlops dataset build`")
        manifest = json.loads((root / MANIFEST_FILE).read_text())
        if manifest.get("format_version") != FORMAT_VERSION:
            raise DatasetError(f"{root}: dataset format {manifest.get('format_version')} is not supported")
        table = pq.read_table(root / DATA_FILE)
        columns = {name: _from_arrow(table.column(name)) for name in table.column_names}
        dataset = cls(manifest["kind"], columns, manifest)
        if dataset.digest != manifest.get("digest"):
            raise IntegrityError(f"{root}: dataset digest {dataset.digest} differs from the manifest's "
                                 f"{manifest.get('digest')}; the data was modified")
        return dataset

    def frame(self) -> pd.DataFrame:
        """The columns as a DataFrame (array columns as per-row arrays)."""
        return pd.DataFrame({k: list(v) if v.ndim > 1 else v for k, v in self.columns.items()})

    def mlflow_dataset(self, source: str):
        """A lightweight MLflow dataset (name, digest, source URI) for ``mlflow.log_input``."""
        from mlflow.data.dataset_source_registry import resolve_dataset_source
        from mlflow.data.meta_dataset import MetaDataset
        from mlflow.data.sources import LocalArtifactDatasetSource

        name = self.manifest.get("name") or f"rlops-{self.kind}"
        local = "://" not in source or source.startswith("file://")
        origin = LocalArtifactDatasetSource(source) if local else resolve_dataset_source(source)
        return MetaDataset(origin, name=name, digest=self.digest[len("sha256:"):][:32])


def content_digest(columns: dict[str, np.ndarray]) -> str:
    """Stable SHA-256 of named columns."""
    h = hashlib.sha256()
    for name in sorted(columns):
        values = columns[name]
        h.update(name.encode())
        if values.dtype == object:
            h.update(json.dumps([None if v is None else str(v) for v in values.tolist()]).encode())
        else:
            arr = np.ascontiguousarray(values)
            h.update(f"{arr.dtype.str}{arr.shape}".encode())
            h.update(arr.tobytes())
    return "sha256:" + h.hexdigest()


def _to_arrow(values: np.ndarray):
    import pyarrow as pa

    if values.dtype == object:
        return pa.array([None if v is None else str(v) for v in values.tolist()], type=pa.string())
    if values.ndim == 2:
        flat = pa.array(np.ascontiguousarray(values).reshape(-1))
        return pa.FixedSizeListArray.from_arrays(flat, values.shape[1])
    return pa.array(values)


def _from_arrow(column) -> np.ndarray:
    import pyarrow as pa

    if pa.types.is_fixed_size_list(column.type):
        width = column.type.list_size
        flat = column.combine_chunks().flatten().to_numpy(zero_copy_only=False)
        return flat.reshape(-1, width)
    if pa.types.is_string(column.type):
        return np.array(column.to_pylist(), dtype=object)
    return column.to_numpy()


# ----- building from the decision log ------------------------------------------------------
def build_transitions(store: ExperienceStore, model: str, bundle: PolicyBundle,
                      policy_versions: list[str] | None = None, join: JoinConfig | None = None,
                      now: float | None = None, name: str | None = None) -> Dataset:
    """Transitions ``(obs, action, propensity, reward, next_obs, done, ...)`` for ``model``'s decisions.

    Rewards are recomputed with ``bundle.reward_spec`` from the joined reward and outcome.
    Decisions in an episode (``episode_id`` + ``step``) get the next decision's observation as
    ``next_obs``; decisions without an episode are one-step (bandit) transitions with
    ``done=True``. Late, unrewarded, NaN-reward and bad-propensity decisions are counted and left out.
    """
    joined = join_feedback(store, join, model=model, now=now)
    frame = joined.decisions
    if policy_versions is not None:
        frame = frame[frame["policy_version"].isin(policy_versions)]
    total = len(frame)
    excluded: dict[str, int] = {}
    if total == 0:
        raise DatasetError(f"no decisions logged for model {model!r}"
                           + (f" and policy versions {policy_versions}" if policy_versions else ""))
    policy = bundle.policy
    _check_action_space(frame, policy.discrete, policy.n_actions)
    frame = frame.copy()
    frame["next_obs"] = [None] * len(frame)
    frame["done"] = False
    keep = np.ones(len(frame), dtype=bool)
    episodic = frame["episode_id"].notna().to_numpy()
    frame.loc[~episodic, "done"] = True
    frame.loc[~episodic, "next_obs"] = frame.loc[~episodic, "obs"]
    if episodic.any():
        keep &= _link_episodes(frame, episodic, excluded)
    no_reward = frame["reward"].isna().to_numpy() & (frame["outcome"].isna().to_numpy()
                                                    if "outcome" in frame else True)
    late = no_reward & frame["late_feedback"].to_numpy()
    _drop(keep, late, "late", excluded)
    _drop(keep, no_reward & ~late, "no_feedback", excluded)
    props = frame["propensity"].to_numpy(dtype=float)
    bad_prop = ~np.isfinite(props) | (props <= 0) | ((props > 1) if policy.discrete else False)
    _drop(keep, bad_prop, "bad_propensity", excluded)
    rewards = _recompute_rewards(frame, keep, bundle, excluded)
    used = frame[keep]
    if used.empty:
        raise DatasetError(f"no usable transitions: 0 of {total} decisions of {model!r} "
                           f"(excluded: {excluded or 'none'}; join: {joined.counts})")
    columns = {
        "obs": np.stack(used["obs"].to_numpy()).astype(np.float32),
        "action": _stack_actions(used["action"].to_numpy(), policy.discrete),
        "propensity": used["propensity"].to_numpy(dtype=np.float64),
        "reward": rewards[keep],
        "next_obs": np.stack(used["next_obs"].to_numpy()).astype(np.float32),
        "done": used["done"].to_numpy(dtype=bool),
        "episode_id": used["episode_id"].to_numpy(dtype=object),
        "step": used["step"].fillna(-1).to_numpy(dtype=np.int64),
        "policy_version": used["policy_version"].to_numpy(dtype=object),
        "decision_id": used["decision_id"].to_numpy(dtype=object),
    }
    manifest = _manifest("transitions", name, store, model, bundle, total, excluded, joined.counts,
                         sorted(set(used["policy_version"])))
    return Dataset("transitions", columns, manifest)


def build_preferences(store: ExperienceStore, model: str, bundle: PolicyBundle,
                      policy_versions: list[str] | None = None, join: JoinConfig | None = None,
                      rating_margin: float = 0.0, now: float | None = None, name: str | None = None) -> Dataset:
    """Preference pairs ``(obs, chosen, rejected)`` from human corrections and ratings.

    A correction prefers the corrected action over the logged one. Ratings are compared between
    decisions taken on the same observation: the higher-rated action is chosen when the ratings
    differ by more than ``rating_margin``. Pairs whose chosen equals rejected are counted and dropped.
    """
    joined = join_feedback(store, join, model=model, now=now)
    frame = joined.decisions
    if policy_versions is not None:
        frame = frame[frame["policy_version"].isin(policy_versions)]
    if not bundle.policy.discrete:
        raise DatasetError("preference pairs need a Discrete action space")
    n_actions = bundle.policy.n_actions
    excluded: dict[str, int] = {}
    obs, chosen, rejected, sources, ids = [], [], [], [], []
    corrections = frame[frame["correction"].notna()] if "correction" in frame else frame.iloc[:0]
    for _, row in corrections.iterrows():
        good, bad = row["correction"], int(row["action"])
        if isinstance(good, float) and good.is_integer():  # pandas turns an int column with gaps into floats
            good = int(good)
        if not isinstance(good, (int, np.integer)) or not 0 <= good < n_actions:
            excluded["invalid_correction"] = excluded.get("invalid_correction", 0) + 1
            continue
        if good == bad:
            excluded["same_pair"] = excluded.get("same_pair", 0) + 1
            continue
        obs.append(row["obs"])
        chosen.append(good)
        rejected.append(bad)
        sources.append("correction")
        ids.append(row["decision_id"])
    rated = frame[frame["rating"].notna()] if "rating" in frame else frame.iloc[:0]
    groups: dict[bytes, list[Any]] = {}
    for _, row in rated.iterrows():
        groups.setdefault(np.asarray(row["obs"], dtype=np.float32).tobytes(), []).append(row)
    for rows in groups.values():
        for i in range(len(rows)):
            for j in range(i + 1, len(rows)):
                a, b = rows[i], rows[j]
                if abs(a["rating"] - b["rating"]) <= rating_margin:
                    continue
                hi, lo = (a, b) if a["rating"] > b["rating"] else (b, a)
                if int(hi["action"]) == int(lo["action"]):
                    excluded["same_pair"] = excluded.get("same_pair", 0) + 1
                    continue
                obs.append(hi["obs"])
                chosen.append(int(hi["action"]))
                rejected.append(int(lo["action"]))
                sources.append("rating")
                ids.append(f"{hi['decision_id']}>{lo['decision_id']}")
    if not obs:
        raise DatasetError(f"no preference pairs in {len(frame)} decisions of {model!r} "
                           f"(corrections: {len(corrections)}, rated: {len(rated)}, excluded: {excluded or 'none'})")
    columns = {"obs": np.stack(obs).astype(np.float32), "chosen": np.asarray(chosen, dtype=np.int64),
               "rejected": np.asarray(rejected, dtype=np.int64), "source": np.asarray(sources, dtype=object),
               "decision_id": np.asarray(ids, dtype=object)}
    manifest = _manifest("preferences", name, store, model, bundle, len(frame), excluded, joined.counts,
                         sorted(set(frame["policy_version"])))
    return Dataset("preferences", columns, manifest)


def validate_preferences(data: Dataset, n_actions: int) -> tuple[Dataset, dict[str, int]]:
    """Drop (and count) pairs with chosen == rejected or actions out of range."""
    chosen, rejected = data.columns["chosen"], data.columns["rejected"]
    same = chosen == rejected
    out_of_range = (chosen < 0) | (chosen >= n_actions) | (rejected < 0) | (rejected >= n_actions)
    keep = ~same & ~out_of_range
    counts = {"same_pair": int(same.sum()), "action_out_of_range": int((out_of_range & ~same).sum())}
    if not keep.any():
        raise DatasetError(f"all {len(chosen)} preference pairs are unusable: {counts}")
    return Dataset(data.kind, {k: v[keep] for k, v in data.columns.items()}, dict(data.manifest)), counts


def validate_transitions(data: Dataset, discrete: bool) -> tuple[Dataset, dict[str, int]]:
    """Drop (and count) rows with non-finite rewards or propensities outside (0, 1]."""
    props, rewards = data.columns["propensity"], data.columns["reward"]
    bad_reward = ~np.isfinite(rewards)
    bad_prop = ~np.isfinite(props) | (props <= 0) | ((props > 1) if discrete else False)
    keep = ~bad_reward & ~bad_prop
    counts = {"nan_reward": int(bad_reward.sum()), "bad_propensity": int((bad_prop & ~bad_reward).sum())}
    if not keep.any():
        raise DatasetError(f"all {len(props)} transitions are unusable: {counts}")
    return Dataset(data.kind, {k: v[keep] for k, v in data.columns.items()}, dict(data.manifest)), counts


# ----- helpers -----------------------------------------------------------------------------
def _drop(keep: np.ndarray, mask: np.ndarray, reason: str, excluded: dict[str, int]) -> None:
    newly = mask & keep
    if newly.any():
        excluded[reason] = excluded.get(reason, 0) + int(newly.sum())
        keep &= ~mask


def _link_episodes(frame: pd.DataFrame, episodic: np.ndarray, excluded: dict[str, int]) -> np.ndarray:
    """Fill ``next_obs``/``done`` inside episodes; return rows that make complete transitions."""
    keep = np.ones(len(frame), dtype=bool)
    positions = np.flatnonzero(episodic)
    sub = frame.iloc[positions]
    steps = pd.to_numeric(sub["step"], errors="coerce").to_numpy(dtype=float)
    episodes = sub["episode_id"].to_numpy().astype(str)
    order = np.lexsort((sub["seq"].to_numpy(), np.nan_to_num(steps, nan=-1.0), episodes))
    pos, steps, episodes = positions[order], steps[order], episodes[order]
    ends = frame["episode_end"].to_numpy()[pos]
    terminated = ends == "terminated"
    same_next = np.zeros(len(pos), dtype=bool)
    same_next[:-1] = (episodes[1:] == episodes[:-1]) & (np.isnan(steps[:-1]) | (steps[1:] == steps[:-1] + 1))
    obs = frame["obs"].to_numpy()
    final = frame["final_obs"].to_numpy() if "final_obs" in frame else np.full(len(frame), None, dtype=object)
    next_obs = np.empty(len(pos), dtype=object)
    for j in np.flatnonzero(terminated):  # the reward payload may carry the final observation
        f = final[pos[j]]
        next_obs[j] = f if isinstance(f, np.ndarray) and f.shape == obs[pos[j]].shape else obs[pos[j]]
    linked = same_next & ~terminated
    next_obs[linked] = obs[pos[np.flatnonzero(linked) + 1]]
    frame.iloc[pos, frame.columns.get_loc("next_obs")] = next_obs
    frame.iloc[pos, frame.columns.get_loc("done")] = terminated
    incomplete = ~terminated & ~same_next
    truncated = incomplete & (ends == "truncated")
    if truncated.any():
        excluded["truncated_episode_end"] = int(truncated.sum())
    if (incomplete & ~truncated).any():
        excluded["no_next_observation"] = int((incomplete & ~truncated).sum())
    keep[pos[incomplete]] = False
    return keep


def _recompute_rewards(frame: pd.DataFrame, keep: np.ndarray, bundle: PolicyBundle,
                       excluded: dict[str, int]) -> np.ndarray:
    spec = bundle.reward_spec
    raw = frame["reward"].to_numpy(dtype=float)
    if spec.ref == "env":  # identity: no per-row Python calls
        spec.verify_source()
        rewards = raw.copy()
    else:
        rewards = np.full(len(frame), np.nan)
        obs, actions, next_obs = frame["obs"].tolist(), frame["action"].tolist(), frame["next_obs"].tolist()
        dones, ends = frame["done"].tolist(), frame["episode_end"].tolist()
        outcomes = frame["outcome"].tolist() if "outcome" in frame else [None] * len(frame)
        for i in np.flatnonzero(keep):
            try:
                rewards[i] = spec(obs=obs[i], action=actions[i], next_obs=next_obs[i], env_reward=raw[i],
                                  terminated=bool(dones[i]), truncated=ends[i] == "truncated",
                                  outcome=outcomes[i] if isinstance(outcomes[i], dict) else None)
            except ConfigError:
                rewards[i] = np.nan
    _drop(keep, ~np.isfinite(rewards), "nan_reward", excluded)
    return rewards


def _check_action_space(frame: pd.DataFrame, discrete: bool, n_actions: int) -> None:
    first = frame["action"].iloc[0]
    if discrete != np.isscalar(first):
        raise DatasetError("logged actions do not match the policy's action space "
                           f"({'Discrete' if discrete else 'Box'} expected, got {type(first).__name__})")
    if discrete:
        actions = frame["action"].to_numpy(dtype=np.int64)
        if actions.min() < 0 or actions.max() >= n_actions:
            raise DatasetError(f"logged actions range {actions.min()}..{actions.max()}, the policy has "
                               f"{n_actions} actions")
    elif len(first) != n_actions:
        raise DatasetError(f"logged actions have {len(first)} dimensions, the policy {n_actions}")


def _stack_actions(values: np.ndarray, discrete: bool) -> np.ndarray:
    return values.astype(np.int64) if discrete else np.stack(values).astype(np.float32)


def _manifest(kind: str, name: str | None, store: ExperienceStore, model: str, bundle: PolicyBundle,
              total: int, excluded: dict[str, int], join_counts: dict[str, int],
              policy_versions: list[str]) -> dict[str, Any]:
    hashes = bundle.hashes()
    return {
        "name": name or f"{model}-{kind}",
        "kind": kind,
        "model": model,
        "store": _redact(store.url),
        "decisions": total,
        "excluded": excluded,
        "join": join_counts,
        "policy_versions": policy_versions,
        "env_sha": hashes["env"],
        "reward_sha": hashes["reward"],
        "reward_ref": bundle.reward_spec.ref,
        "built_with_bundle": hashes["bundle"],
        "obs_dim": bundle.policy.obs_dim,
        "action_space": space_to_json(bundle.policy.action_space),
        "created_at": time.time(),
        "rlops_version": __version__,
    }


def _redact(url: str) -> str:
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url

