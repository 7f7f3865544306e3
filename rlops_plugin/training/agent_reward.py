"""RLHF reward models for agents: TRL's ``RewardTrainer`` on preference pairs, scored, registered, loaded back.

:func:`train_reward_model` turns an agent's checkpoint into a sequence classifier (one output, the reward) and
trains it on the ``pair`` rows of an agent ``preferences`` dataset, written exactly as the agent trainers write
them (the policy's system prompt first, tool calls in its tool-call format, TRL's conversational format with
the ``tools`` column). A share of the contexts is held out and the model's agreement with people on those pairs
is measured (a reward model that has not earned it must not label data or steer GRPO).

The result is a directory: the checkpoint as safetensors with its tokenizer, and ``manifest.json`` naming every
file with its SHA-256, the agent formatting the model reads, its parent policy and dataset, its metrics.
:func:`register_reward_model` logs it as an MLflow LoggedModel of a run (params and metrics ``trl/...``) and
registers it with ``rlops.kind=reward_model``, the lineage tags and the manifest's own hash;
:func:`load_reward_model` downloads it, checks the manifest against that tag and every file against the manifest
before transformers reads a byte (``trust_remote_code=False``, safetensors only: nothing unpickled).

Why not a ``Trainer`` in the registry: the contract returns a policy (``TrainResult.policy``) that the lifecycle
evaluates on the task suite and registers as the next champion; a reward model is not a policy, so it is a
function of its own that ``rlops train --trainer reward_model`` calls.
"""

from __future__ import annotations

import json
import math
import os
import random
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rlops_plugin.bundle.bundle import PolicyBundle
from rlops_plugin.bundle.hashing import sha256_file
from rlops_plugin.bundle.storage import read_json
from rlops_plugin.errors import ConfigError, IntegrityError, RegistryError, UnsafeArtifactError
from rlops_plugin.experience.dataset import Dataset, DatasetError
from rlops_plugin.flavor.lineage import TAG_DATASET_DIGEST
from rlops_plugin.kinds.agent.judges import Agreement, Comparison, Judge, JudgeSpec, judge_agreement, make_judge
from rlops_plugin.kinds.agent.policy import AgentPolicy, model_file_allowed
from rlops_plugin.kinds.agent.signals import assistant_message, signal_counts, trainable_rows
from rlops_plugin.local.threads import threads_for, torch_threads
from rlops_plugin.training.agent_trl import (
    _OUTPUTS,
    _answer,
    _common_args,
    _messages,
    _tools,
    _with_tools,
    history_callback,
    run_metrics,
    run_trl,
    save_checkpoint,
)
from rlops_plugin.training.base import Progress, require_data

KIND = "reward_model"
MANIFEST_FILE = "manifest.json"
FORMAT_VERSION = 1
ARTIFACT_NAME = "reward_model"
TAG_KIND = "rlops.kind"
TAG_PARENT = "rlops.parent"
TAG_MANIFEST_SHA = "rlops.manifest_sha256"
TAG_AGREEMENT = "rlops.agreement"


@dataclass
class RewardModelConfig:
    """Settings of a reward-model update (CPU-safe: fp32, no activation checkpointing)."""

    steps: int = 200
    """Optimizer steps (budget by steps, not epochs). Measured on triage pairs (36 pairs, batch 8, lr 1e-3):
    200 steps agreed with people on 12/12 pairs of unseen tickets for seeds 0-4, 100 steps on 10-12/12."""
    lr: float = 1e-3
    """Learning rate (the score head starts random: TRL's small defaults barely move it on CPU budgets)."""
    batch_size: int = 8
    """Pairs per optimizer step."""
    seed: int = 0
    """Seed of the head's initialisation, the hold-out split, shuffling and dropout."""
    max_length: int = 0
    """Longest prompt + answer in tokens; 0: the model's context. Longer pairs are dropped and counted."""
    holdout_fraction: float = 0.2
    """Share of the contexts (distinct prompts) kept out of training to measure agreement with people; 0 trains
    on every pair and leaves agreement unmeasured."""
    center_rewards_coefficient: float = 0.01
    """Weight of TRL's penalty on the mean reward, keeping scores near zero (comparable across updates)."""
    torch_threads: int = 0
    """CPU threads (0: one for a model under 5M parameters, else torch's current setting)."""
    logging_steps: int = 10
    """Steps between recorded TRL metrics (the last step is always recorded)."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.holdout_fraction < 1.0:
            raise ConfigError(f"RewardModelConfig.holdout_fraction: in [0, 1), got {self.holdout_fraction}")
        if self.steps < 1 or self.batch_size < 1:
            raise ConfigError(f"RewardModelConfig: steps and batch_size at least 1 (got {self.steps}, "
                              f"{self.batch_size})")


HumanPair = tuple[list[dict[str, Any]], dict[str, Any], dict[str, Any], list[dict[str, Any]] | None]
"""``(messages, chosen, rejected, tools)``: what :func:`judge_agreement` reads."""


@dataclass
class RewardModelResult:
    """A trained reward model: its directory, metrics, metric history and the pairs held out from training."""

    directory: Path
    metrics: dict[str, float]
    history: list[tuple[int, dict[str, float]]] = field(default_factory=list)
    held_out: list[HumanPair] = field(default_factory=list)
    config: RewardModelConfig = field(default_factory=RewardModelConfig)

    @property
    def manifest(self) -> dict[str, Any]:
        """The directory's manifest (files and hashes, formatting, lineage, metrics)."""
        return read_json(self.directory / MANIFEST_FILE, MANIFEST_FILE)


# ----- training --------------------------------------------------------------------------------------------
def train_reward_model(init: PolicyBundle, data: Dataset | None, config: RewardModelConfig | None = None,
                       progress: Progress | None = None, output_dir: str | Path | None = None) -> RewardModelResult:
    """Train a reward model from ``init``'s agent checkpoint on ``data``'s ``pair`` rows (module docstring)."""
    import torch
    import trl

    config = config or RewardModelConfig()
    data = require_data(data, "preferences")
    policy = _agent_policy(init)
    rows = trainable_rows(data, "pair")
    if not rows:
        raise DatasetError(f"train_reward_model: no trainable pair rows; the dataset holds {signal_counts(data)}")
    train_rows, held_rows = _split(rows, config)
    torch.manual_seed(config.seed)
    model, tokenizer = _classifier(policy)
    limit = config.max_length or int(getattr(model.config, "max_position_embeddings", 2048))
    examples, too_long = [], 0
    for row in train_rows:
        example = {"prompt": _messages(policy, row["prompt"]), "chosen": _answer(policy, row["chosen"]),
                   "rejected": _answer(policy, row["rejected"]), "tools": _tools(row)}
        if _tokens(tokenizer, example, "chosen") > limit or _tokens(tokenizer, example, "rejected") > limit:
            too_long += 1
        else:
            examples.append(example)
    if not examples:
        raise DatasetError(f"all {len(train_rows)} training pairs are longer than {limit} tokens")
    history: list[tuple[int, dict[str, float]]] = []
    record = history_callback(history, progress, config.steps)
    out = Path(output_dir) if output_dir is not None else Path(tempfile.mkdtemp(prefix="rlops-reward-model-"))
    if output_dir is None:
        _OUTPUTS.append(str(out))
    if (out / ARTIFACT_NAME).exists():
        raise ConfigError(f"{out / ARTIFACT_NAME} exists: give an output_dir without a previous reward model")
    out.mkdir(parents=True, exist_ok=True)
    args = _common_args(config, out / "trl", config.max_length)  # type: ignore[arg-type]
    args = trl.RewardConfig(**args, center_rewards_coefficient=config.center_rewards_coefficient or None)
    from datasets import Dataset as HFDataset

    trainer = trl.RewardTrainer(model=model, args=args, train_dataset=HFDataset.from_list(_with_tools(examples)),
                                processing_class=tokenizer, callbacks=[record])
    result, trained = run_trl(trainer, config.torch_threads)
    directory = out / ARTIFACT_NAME
    save_checkpoint(trained, tokenizer, directory)
    metrics = {"data/pairs": float(len(examples)), "data/held_out_pairs": float(len(held_rows)),
               "data/excluded_too_long": float(too_long), **run_metrics(result, history)}
    held_out = [_human_pair(row) for row in held_rows]
    _write_manifest(directory, policy, init, data, config, metrics)
    if held_out:
        agreement = reward_model_agreement(RewardModelScorer(directory), held_out)
        metrics.update({"eval/agreement": agreement.rate, "eval/agreement_ci_low": agreement.ci_low,
                        "eval/agreement_ci_high": agreement.ci_high, "eval/pairs": float(agreement.n),
                        "eval/ties": float(agreement.ties)})
        _write_manifest(directory, policy, init, data, config, metrics)
    return RewardModelResult(directory, metrics, history, held_out, config)


def _agent_policy(init: PolicyBundle) -> AgentPolicy:
    """The init bundle's full-weight agent policy (a LoRA adapter's base is what to start from instead)."""
    policy = init.policy
    if not isinstance(policy, AgentPolicy):
        raise ConfigError(f"reward models start from an agent policy, not {getattr(policy, 'kind', '?')}")
    if policy.adapter:
        raise ConfigError("the init policy is a LoRA adapter: train the reward model from its base agent")
    return policy


def _classifier(policy: AgentPolicy) -> tuple[Any, Any]:
    """``(sequence classifier with one output, tokenizer)`` from the policy's verified checkpoint files.

    The files are linked into a private directory first (transformers reads whatever a checkpoint directory
    holds), and the pad token, which the classifier needs to find each sequence's last token, is set.
    """
    import torch
    from transformers import AutoModelForSequenceClassification, PreTrainedTokenizerFast

    policy.verify_files()
    with tempfile.TemporaryDirectory(prefix="rlops-reward-init-") as staged:
        for name, path in policy.files.items():
            os.symlink(path.resolve(), Path(staged) / name)
        model = AutoModelForSequenceClassification.from_pretrained(
            staged, num_labels=1, local_files_only=True, trust_remote_code=False, use_safetensors=True,
            dtype=torch.float32)
        tokenizer = PreTrainedTokenizerFast.from_pretrained(staged, local_files_only=True)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


def _split(rows: list[dict[str, Any]], config: RewardModelConfig) -> tuple[list[dict[str, Any]],
                                                                             list[dict[str, Any]]]:
    """Training and held-out pairs, split by context (all pairs of one prompt on the same side), seeded."""
    if config.holdout_fraction == 0:
        return rows, []
    contexts = sorted({json.dumps([r["prompt"], r["tools"]], sort_keys=True) for r in rows})
    random.Random(config.seed).shuffle(contexts)
    n_held = round(len(contexts) * config.holdout_fraction)
    if n_held == 0 or n_held == len(contexts):
        raise ConfigError(f"holdout_fraction {config.holdout_fraction} of {len(contexts)} contexts holds out "
                          f"{n_held}: give more pairs, or holdout_fraction=0 to train on all (agreement unmeasured)")
    held = set(contexts[:n_held])
    key = {id(r): json.dumps([r["prompt"], r["tools"]], sort_keys=True) for r in rows}
    return [r for r in rows if key[id(r)] not in held], [r for r in rows if key[id(r)] in held]


def _tokens(tokenizer: Any, example: Mapping[str, Any], side: str) -> int:
    tools = json.loads(example["tools"]) or None
    return len(tokenizer.apply_chat_template(example["prompt"] + example[side], tools=tools, tokenize=True,
                                             return_dict=True)["input_ids"])


def _human_pair(row: Mapping[str, Any]) -> HumanPair:
    """A dataset pair as ``(messages, chosen, rejected, tools)`` (the messages as logged, not yet formatted)."""
    return (list(row["prompt"]), dict(row["chosen"][0]), dict(row["rejected"][0]), list(row["tools"] or []) or None)


def _write_manifest(directory: Path, policy: AgentPolicy, init: PolicyBundle, data: Dataset,
                    config: RewardModelConfig, metrics: Mapping[str, float]) -> None:
    """``manifest.json``: every other file's SHA-256, the agent formatting it reads, lineage and metrics."""
    files = {p.name: sha256_file(p) for p in sorted(directory.iterdir()) if p.name != MANIFEST_FILE}
    formatting = {"system_prompt": policy.system_prompt(), "tool_call_format": policy.agent["tool_call_format"],
                  "tools": policy.tools}
    manifest = {"format_version": FORMAT_VERSION, "kind": KIND, "files": files, "agent": formatting,
                "base_policy_sha256": policy.sha256(), "base_bundle_sha256": init.bundle_sha,
                "dataset_digest": data.digest, "config": asdict(config),
                "metrics": {k: v for k, v in metrics.items() if math.isfinite(v)}}
    (directory / MANIFEST_FILE).write_text(json.dumps(manifest, indent=1, sort_keys=True))


# ----- scoring -----------------------------------------------------------------------------------------------
class RewardModelScorer:
    """A trained reward model read from its directory, every file checked against ``manifest.json`` first.

    ``expected_manifest_sha256`` (what the registry recorded) pins the manifest itself: without it a directory
    edited consistently (file and manifest) would pass.
    """

    def __init__(self, directory: str | Path, expected_manifest_sha256: str | None = None,
                 model_uri: str | None = None) -> None:
        import torch
        from transformers import AutoModelForSequenceClassification, PreTrainedTokenizerFast

        self.directory = Path(directory)
        manifest_path = self.directory / MANIFEST_FILE
        if not manifest_path.is_file():
            raise IntegrityError(f"{self.directory}: no {MANIFEST_FILE}; not a reward model directory")
        self.manifest_sha256 = sha256_file(manifest_path)
        if expected_manifest_sha256 is not None and self.manifest_sha256 != expected_manifest_sha256:
            raise IntegrityError(f"{manifest_path}: sha256 {self.manifest_sha256[:12]}... differs from the "
                                 f"{expected_manifest_sha256[:12]}... recorded at registration")
        manifest = read_json(manifest_path, MANIFEST_FILE)
        if not isinstance(manifest, dict) or manifest.get("kind") != KIND \
                or manifest.get("format_version") != FORMAT_VERSION or not isinstance(manifest.get("files"), dict):
            raise IntegrityError(f"{manifest_path}: not a reward-model manifest (format_version {FORMAT_VERSION})")
        listed = manifest["files"]
        present = {p.name for p in self.directory.iterdir()} - {MANIFEST_FILE}
        if present != set(listed):
            raise IntegrityError(f"{self.directory}: files {sorted(present ^ set(listed))} are not as the manifest "
                                 "lists them")
        for name, digest in listed.items():
            if not model_file_allowed(name):
                raise UnsafeArtifactError(f"{name}: not an allowed checkpoint file (JSON, safetensors, Jinja)")
            if sha256_file(self.directory / name) != digest:
                raise IntegrityError(f"{self.directory / name}: sha256 differs from the manifest")
        self.manifest = manifest
        self.model_uri = model_uri or f"file://{self.directory.resolve()}#sha256={self.manifest_sha256}"
        """Where the model came from (the pinned registry version when loaded by :func:`load_reward_model`)."""
        # the agent formatting (system prompt, tool-call format) through the policy class that wrote the data;
        # its constructor also refuses remote code (auto_map) and files that are not safetensors
        self.formatter = AgentPolicy({n: self.directory / n for n in listed}, manifest["agent"])
        self.model = AutoModelForSequenceClassification.from_pretrained(
            str(self.directory), local_files_only=True, trust_remote_code=False, use_safetensors=True,
            dtype=torch.float32)
        self.model.eval()
        self.tokenizer = PreTrainedTokenizerFast.from_pretrained(str(self.directory), local_files_only=True)
        if self.model.config.num_labels != 1 or self.tokenizer.pad_token_id is None:
            raise IntegrityError(f"{self.directory}: a reward model has one output and a pad token")

    @property
    def sha256(self) -> str:
        """The manifest's hash: the reward model's version (it covers every file)."""
        return self.manifest_sha256

    def score(self, messages: Sequence[Mapping[str, Any]], response: Mapping[str, Any],
              tools: Sequence[Mapping[str, Any]] | None = None) -> float:
        """The reward of ``response`` (an assistant message or a logged choice) to ``messages``; higher is better."""
        return self.scores([(messages, response, tools)])[0]

    __call__ = score

    def scores(self, items: Sequence[tuple[Sequence[Mapping[str, Any]], Mapping[str, Any],
                                           Sequence[Mapping[str, Any]] | None]]) -> list[float]:
        """Rewards of many ``(messages, response, tools)`` in one padded forward pass."""
        import torch

        ids = []
        for messages, response, tools in items:
            conversation = _messages(self.formatter, list(messages)) + _answer(self.formatter, [_assistant(response)])
            ids.append(self.tokenizer.apply_chat_template(conversation, tools=list(tools) if tools else None,
                                                          tokenize=True, return_dict=True)["input_ids"])
        if not ids:
            return []
        width = max(map(len, ids))
        pad = self.tokenizer.pad_token_id
        input_ids = torch.tensor([row + [pad] * (width - len(row)) for row in ids])
        mask = torch.tensor([[1] * len(row) + [0] * (width - len(row)) for row in ids])
        with torch_threads(threads_for(self.model)), torch.inference_mode():
            logits = self.model(input_ids=input_ids, attention_mask=mask).logits[:, 0]
        return [float(v) for v in logits]

    def compare(self, messages: Sequence[Mapping[str, Any]], a: Mapping[str, Any], b: Mapping[str, Any],
                tools: Sequence[Mapping[str, Any]] | None = None) -> Comparison:
        """Which of two answers the reward model prefers (``tie`` on equal scores), with both scores."""
        score_a, score_b = self.scores([(messages, a, tools), (messages, b, tools)])
        winner = "a" if score_a > score_b else "b" if score_b > score_a else "tie"
        return Comparison(winner, details={"scores": {"a": score_a, "b": score_b}})

    def as_judge(self, name: str = "reward-model") -> Judge:
        """This model as a ``reward_model`` judge (for :func:`judge_agreement` and labelling pairs)."""
        return make_judge(JudgeSpec(name=name, type="reward_model", model_uri=self.model_uri), scorer=self.score)


def _assistant(response: Mapping[str, Any]) -> dict[str, Any]:
    """An assistant message (OpenAI tool calls) from a message or a logged choice (``{"name", "arguments"}`` calls)."""
    calls = response.get("tool_calls") or []
    if all("function" in c for c in calls):
        return {"role": "assistant", "content": response.get("content"), **({"tool_calls": calls} if calls else {})}
    return assistant_message(response.get("content"), calls)


def reward_model_agreement(scorer: RewardModelScorer, pairs: Sequence[Sequence[Any]],
                           confidence: float = 0.95) -> Agreement:
    """How often the reward model prefers what people chose on ``(messages, chosen, rejected, tools)`` pairs."""
    if not pairs:
        raise ConfigError("reward_model_agreement: no pairs to measure on")
    return judge_agreement(scorer.as_judge(), pairs, confidence)


# ----- the registry ----------------------------------------------------------------------------------------------
def register_reward_model(result: RewardModelResult, name: str, parent_model_uri: str, dataset_digest: str,
                          experiment: str | None = None, run_name: str | None = None,
                          agreement: Agreement | None = None) -> tuple[str, str]:
    """Log ``result`` as a LoggedModel of a new MLflow run and register it as a version of ``name``.

    The run holds params ``trl/<config field>``, the metric history as ``trl/...`` with steps and the final
    metrics; the version carries ``rlops.kind=reward_model``, ``rlops.parent``, ``rlops.dataset_digest`` and
    ``rlops.manifest_sha256`` (what :func:`load_reward_model` checks), and ``rlops.agreement`` when agreement with
    people was measured (on the held-out contexts, or ``agreement`` measured on other human pairs, which wins).
    Returns ``(models:/name/version, version)``.
    """
    import time

    import mlflow
    from mlflow.entities import LoggedModelStatus, Metric

    scorer_check = RewardModelScorer(result.directory)  # refuse to register a directory that fails its own manifest
    if result.manifest.get("dataset_digest") != dataset_digest:
        raise ConfigError(f"dataset_digest {dataset_digest}: the reward model was trained on "
                          f"{result.manifest.get('dataset_digest')}")
    tags = {TAG_KIND: KIND, TAG_PARENT: parent_model_uri, TAG_DATASET_DIGEST: dataset_digest,
            TAG_MANIFEST_SHA: scorer_check.manifest_sha256}
    metrics = dict(result.metrics)
    if agreement is not None:
        metrics.update({"eval/agreement": agreement.rate, "eval/agreement_ci_low": agreement.ci_low,
                        "eval/agreement_ci_high": agreement.ci_high, "eval/pairs": float(agreement.n),
                        "eval/ties": float(agreement.ties)})
    if "eval/agreement" in metrics:
        tags[TAG_AGREEMENT] = f"{metrics['eval/agreement']:.3f} on {int(metrics['eval/pairs'])} pairs"
    if experiment:
        mlflow.set_experiment(experiment)
    params = {f"trl/{k}": v for k, v in asdict(result.config).items()}
    client = mlflow.MlflowClient()
    with mlflow.start_run(run_name=run_name or f"reward_model from {parent_model_uri}",
                          tags={**tags, "rlops.event": "reward_model_update"}) as run:
        mlflow.log_params({**params, "dataset_digest": dataset_digest, "init_model_uri": parent_model_uri})
        timestamp = int(1000 * time.time())
        batch = [Metric(key, value, timestamp, step) for step, values in result.history
                 for key, value in values.items() if math.isfinite(value)]
        for start in range(0, len(batch), 900):
            client.log_batch(run.info.run_id, metrics=batch[start:start + 900])
        mlflow.log_metrics({k: v for k, v in metrics.items() if math.isfinite(v)})
        mlflow.log_dict(result.manifest, f"{ARTIFACT_NAME}/{MANIFEST_FILE}")
        logged = mlflow.initialize_logged_model(name=ARTIFACT_NAME, source_run_id=run.info.run_id, tags=tags,
                                                params={k: str(v) for k, v in params.items()})
        try:
            client.log_model_artifacts(logged.model_id, str(result.directory))
        except BaseException:
            mlflow.finalize_logged_model(logged.model_id, LoggedModelStatus.FAILED)
            raise
        mlflow.finalize_logged_model(logged.model_id, LoggedModelStatus.READY)
        version = mlflow.register_model(f"models:/{logged.model_id}", name, tags=tags)
    return f"models:/{name}/{version.version}", str(version.version)


def reward_model_scorer(source: str | Path) -> RewardModelScorer:
    """A reward model from a registry URI (``models:/...``, verified by :func:`load_reward_model`) or a directory."""
    text = str(source)
    return load_reward_model(text) if text.startswith("models:/") else RewardModelScorer(text)


def load_reward_model(model_uri: str, dst: str | Path | None = None) -> RewardModelScorer:
    """The reward model at ``model_uri`` (``models:/NAME/VERSION``, ``@ALIAS`` or ``models:/m-<id>``), verified.

    The registry's ``rlops.kind`` must be ``reward_model`` and the downloaded manifest must hash to the
    ``rlops.manifest_sha256`` recorded at registration; every file must then match the manifest.
    """
    import mlflow

    from rlops_plugin.flavor.refs import resolve_model_uri

    ref = resolve_model_uri(model_uri)
    if ref.registered:
        tags = ref.tags
    elif ref.uri.startswith("models:/m-"):
        tags = dict(mlflow.get_logged_model(ref.uri[len("models:/"):]).tags or {})
    else:
        raise RegistryError(f"{model_uri}: give a registered reward model (models:/NAME/VERSION or @ALIAS) or "
                            "models:/m-<id>; a local directory is RewardModelScorer(directory)")
    if tags.get(TAG_KIND) != KIND or not tags.get(TAG_MANIFEST_SHA):
        raise RegistryError(f"{model_uri}: not a registered reward model (tag {TAG_KIND}={tags.get(TAG_KIND)!r})")
    target = Path(dst) if dst is not None else Path(tempfile.mkdtemp(prefix="rlops-reward-model-"))
    if dst is None:
        _OUTPUTS.append(str(target))
    path = mlflow.artifacts.download_artifacts(ref.download_uri, dst_path=str(target))
    pinned = ref.download_uri if ref.registered else ref.uri
    return RewardModelScorer(path, expected_manifest_sha256=tags[TAG_MANIFEST_SHA], model_uri=pinned)


__all__ = ["RewardModelConfig", "RewardModelResult", "RewardModelScorer", "load_reward_model", "register_reward_model",
           "reward_model_agreement", "reward_model_scorer", "train_reward_model"]

