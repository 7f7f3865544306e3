"""Extract a training signal from the decision log, and fit the simulator to it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rlops_plugin.defaults import JOIN_GRACE_S, JOIN_WINDOW_S
from rlops_plugin.errors import ConfigError
from rlops_plugin.experience.dataset import Dataset
from rlops_plugin.experience.join import JoinConfig
from rlops_plugin.experience.store import open_store
from rlops_plugin.flavor.model import load_model
from rlops_plugin.kinds.base import kind_of
from rlops_plugin.simulation.calibration import Calibration, calibrate_dataset


def build_dataset(store: str, bundle_uri: str, *, kind: str = "transitions", served_model: str = "policy",
                  policy_versions: list[str] | None = None, window_s: float = JOIN_WINDOW_S,
                  grace_s: float = JOIN_GRACE_S, out_dir: str | Path | None = None, judge: str | None = None,
                  judge_min_agreement: float | None = None) -> Dataset:
    """Join the log's rewards and feedback and build ``kind`` rows under ``bundle_uri``'s EnvSpec/RewardSpec.

    The bundle's policy kind says which datasets exist (``vector``: transitions, preferences; ``agent``:
    preferences). ``judge`` (a registered judge's name, agents only) labels unreviewed answers once its
    agreement with the log's human pairs reaches ``judge_min_agreement``. With ``out_dir`` the dataset
    (Parquet + manifest with its digest and exclusion counts) is saved there.
    """
    bundle = load_model(bundle_uri)
    builders = kind_of(bundle).dataset_builders()
    if kind not in builders:
        raise ConfigError(f"kind: {kind!r} is not a dataset of {bundle.kind} policies; known: {sorted(builders)}")
    options: dict[str, Any] = {}
    if judge is not None:
        if bundle.kind != "agent":
            raise ConfigError("judge: judges label agent answers; vector datasets take corrections and ratings")
        from rlops_plugin.kinds.agent.judges import make_judge, registered_judge
        from rlops_plugin.kinds.agent.signals import SignalConfig

        spec = registered_judge(judge)
        scorer = None
        if spec.type == "reward_model":
            from rlops_plugin.training.agent_reward import load_reward_model

            scorer = load_reward_model(str(spec.model_uri)).score
        options["judge"] = make_judge(spec, scorer=scorer)
        if judge_min_agreement is not None:
            options["config"] = SignalConfig(judge_min_agreement=judge_min_agreement)
    with open_store(store) as experience:
        data = builders[kind](experience, served_model, bundle, policy_versions=policy_versions,
                              join=JoinConfig(window_s=window_s, grace_s=grace_s), **options)
    if out_dir is not None:
        data.save(out_dir)
    return data


def calibrate(dataset: str | Path | Dataset, bundle_uri: str, *, recent: int | None = None,
              params: dict[str, Any] | None = None) -> Calibration:
    """Fit the simulator's declared physics to the newest ``recent`` logged transitions (all when None)."""
    data = dataset if isinstance(dataset, Dataset) else Dataset.load(dataset)
    return calibrate_dataset(load_model(bundle_uri).env_spec, data, recent=recent, params=params or None)
