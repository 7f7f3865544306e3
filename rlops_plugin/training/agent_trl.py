"""Agent policy updates with TRL: SFT on reviewed answers, DPO (with its SFT term), KTO on thumbs.

Every update starts from the deployed checkpoint (the init bundle's weights, loaded afresh: TRL patches
a model in place) and, for DPO and KTO, a second frozen copy of it is the reference model. Rows come
from an agent ``preferences`` dataset (:mod:`rlops_plugin.kinds.agent.signals`), quarantined rows never;
messages are written as the policy reads them (its system prompt first, tool calls in its tool-call
format) and handed to TRL in its conversational format with the ``tools`` column. The trained weights
are saved as safetensors and become a new :class:`AgentPolicy` with the same agent configuration. The
shared bookkeeping (evaluation before/after on the task suite, one MLflow run, lineage, registration)
is :func:`rlops_plugin.training.train.train`'s.

Under torchrun, transformers/accelerate wrap the model in DDP themselves (gloo: the updates run on CPU); each rank
takes ``ceil(batch_size / world)`` rows per step, so the effective batch is the configured one. Only rank 0 saves the
checkpoint: the other ranks return the init policy as a placeholder, which :func:`~rlops_plugin.training.train.train`
never evaluates, logs or registers.

Why SFT on approved + corrected answers is the default recipe: on the triage task after a world
change, plain DPO never improved a tiny champion and DPO with an SFT term forgot part of the old world,
while SFT on every reviewed answer learned the new world and kept the old (README, "Agent learning").
"""

from __future__ import annotations

import atexit
import json
import math
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from rlops_plugin.bundle.bundle import PolicyBundle
from rlops_plugin.errors import ConfigError
from rlops_plugin.experience.dataset import Dataset, DatasetError
from rlops_plugin.kinds.agent.policy import AgentPolicy, model_file_allowed
from rlops_plugin.kinds.agent.signals import signal_counts, trainable_rows
from rlops_plugin.kinds.agent.tasks import with_system_prompt
from rlops_plugin.local.threads import threads_for, torch_threads
from rlops_plugin.training import distributed
from rlops_plugin.training.base import Progress, Trainer, TrainResult, require_data

_OUTPUTS: list[str] = []


@dataclass
class AgentTrainConfig:
    """Settings every TRL update shares (CPU-safe defaults: fp32, no activation checkpointing)."""

    steps: int = 160
    """Optimizer steps (budget by steps, not epochs: the dataset size varies from update to update)."""
    lr: float = 3e-4
    """Learning rate (TRL's 1e-6 DPO default barely moves a small model; 1e-4..1e-3 works on CPU)."""
    batch_size: int = 8
    """Rows per optimizer step."""
    seed: int = 0
    """Seed of initialisation, shuffling and dropout: an update is reproducible given its data and seed."""
    max_length: int = 0
    """Longest prompt + answer in tokens; 0: the model's context. Longer rows are dropped and counted."""
    lora: bool = False
    """Train a LoRA adapter through PEFT (merged into the weights afterwards) instead of every weight."""
    lora_r: int = 8
    """LoRA rank."""
    lora_alpha: int = 16
    """LoRA scaling."""
    torch_threads: int = 0
    """CPU threads for the update (0: one for a model under 5M parameters, else torch's current setting)."""
    logging_steps: int = 10
    """Steps between recorded TRL metrics (the last step is always recorded)."""


@dataclass
class SFTConfig(AgentTrainConfig):
    """Supervised fine-tuning on reviewed answers."""

    sources: list[str] = field(default_factory=lambda: ["approved", "correction"])
    """Demonstrations to learn from: ``approved`` answers (replay: what already worked) and ``correction``s."""
    lr: float = 1e-3
    """Learning rate; in ``bench/agent_learning.py`` 1e-3 was the best of 3e-4/1e-3/3e-3 without a red-team
    regression (3e-4 failed a red-team case)."""


@dataclass
class DPOConfig(AgentTrainConfig):
    """Direct preference optimisation on pairs, with TRL's SFT term on the chosen answer by default."""

    beta: float = 0.1
    """Strength of the implicit KL penalty towards the reference (the deployed champion)."""
    sft_weight: float = 1.0
    """Weight of the SFT term (``loss_type=["sigmoid", "sft"]``); 0 is plain DPO, which on small models pushes
    the rejected answer down without raising the chosen one (watch ``logps/chosen``)."""


@dataclass
class KTOConfig(AgentTrainConfig):
    """Kahneman-Tversky optimisation on unpaired thumbs up/down."""

    beta: float = 0.1
    """Strength of the KL penalty towards the reference."""
    desirable_weight: float = 1.0
    """Weight of thumbs-up answers."""
    undesirable_weight: float = 1.0
    """Weight of thumbs-down answers."""


class AgentTRLTrainer(Trainer):
    """The shared update: rows from the dataset, fresh model copies, a TRL trainer, a new agent policy."""

    logged_metrics: ClassVar[tuple[str, ...]] = ("train/loss", "train/steps")
    """What the trainer reports while training (the metrics a search space may prune on)."""

    policy_kind: ClassVar[str] = "agent"
    data_kind: ClassVar[str] = "preferences"
    signal: ClassVar[str]

    def train(self, init: PolicyBundle, data: Dataset | None, config: Any,
              progress: Progress | None = None) -> TrainResult:
        """Fine-tune ``init``'s checkpoint on the dataset's rows of this trainer's signal."""
        import torch

        data = require_data(data, self.data_kind)
        policy = init.policy
        if not isinstance(policy, AgentPolicy):
            raise ConfigError(f"{type(self).__name__} trains agent policies, not {getattr(policy, 'kind', '?')}")
        if policy.adapter:
            raise ConfigError("the init policy is a LoRA adapter: train from its base agent (with lora=true) instead")
        rows = self.rows(trainable_rows(data, self.signal), config)
        if not rows:
            raise DatasetError(f"{type(self).__name__}: no trainable {self.signal} rows for this update "
                               f"({self.selection(config)}); the dataset holds {signal_counts(data)}")
        distributed.init()
        torch.manual_seed(config.seed)
        model, tokenizer = policy.fresh_copy()
        limit = config.max_length or int(getattr(model.config, "max_position_embeddings", 2048))
        examples, too_long = [], 0
        for row in rows:
            example = self.example(policy, row)
            if self.length(tokenizer, example) > limit:
                too_long += 1
            else:
                examples.append(example)
        if not examples:
            raise DatasetError(f"all {len(rows)} {self.signal} rows are longer than {limit} tokens (the model's "
                               "context or max_length)")
        history: list[tuple[int, dict[str, float]]] = []
        out = Path(tempfile.mkdtemp(prefix="rlops-agent-update-"))
        _OUTPUTS.append(str(out))
        trainer = self.make_trainer(policy, model, tokenizer, examples, config, out / "trl",
                                    [history_callback(history, progress, config.steps)])
        result, trained = run_trl(trainer, config.torch_threads)
        metrics = {"data/rows": float(len(examples)), "data/excluded_too_long": float(too_long),
                   **run_metrics(result, history)}
        if not distributed.is_main():  # rank 0 holds the same weights and is the one that saves them
            return TrainResult(policy, metrics, history)
        if config.lora:
            trained = trained.merge_and_unload()
        files = save_checkpoint(trained, tokenizer, out / "model")
        return TrainResult(AgentPolicy(files, policy.agent), metrics, history)

    # ----- what a subclass says -------------------------------------------------------------
    def selection(self, config: Any) -> str:
        """The rows this update reads, in words (for error messages)."""
        return f"signal {self.signal!r}"

    def rows(self, rows: list[dict[str, Any]], config: Any) -> list[dict[str, Any]]:
        """The dataset rows this update trains on (all of its signal by default)."""
        return rows

    def example(self, policy: AgentPolicy, row: Mapping[str, Any]) -> dict[str, Any]:
        """One TRL example from a dataset row (conversational, text as the policy writes it)."""
        raise NotImplementedError

    def make_trainer(self, policy: AgentPolicy, model: Any, tokenizer: Any, examples: list[dict[str, Any]],
                     config: Any, output_dir: Path, callbacks: list[Any]) -> Any:
        """The configured TRL trainer."""
        raise NotImplementedError


def history_callback(history: list[tuple[int, dict[str, float]]], progress: Progress | None, total: int) -> Any:
    """A transformers callback recording TRL's logged metrics as ``trl/<name>`` with their step (and telling
    ``progress``): what the update's MLflow run logs as its metric history."""
    from transformers import TrainerCallback

    class _Record(TrainerCallback):
        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kwargs: Any) -> None:
            values = {f"trl/{k}": float(v) for k, v in (logs or {}).items()
                      if isinstance(v, (int, float)) and math.isfinite(v)}
            if values:
                history.append((int(state.global_step), values))
                if progress is not None:
                    progress(int(state.global_step), total, values)

    return _Record()


def run_trl(trainer: Any, threads: int = 0) -> tuple[Any, Any]:
    """Train a TRL trainer quietly (its stdout printers removed) on ``threads`` (0: by model size);
    returns the train output and the trained model in eval mode."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    for callback in (PrinterCallback, ProgressCallback):
        trainer.remove_callback(callback)
    with torch_threads(threads or threads_for(trainer.model)):
        result = trainer.train()
    trainer.model.eval()
    return result, trainer.model


def save_checkpoint(model: Any, tokenizer: Any, directory: Path) -> dict[str, Path]:
    """Save weights (safetensors) and tokenizer; return the files an agent checkpoint may hold (others removed)."""
    model.save_pretrained(directory, safe_serialization=True)
    tokenizer.save_pretrained(directory)
    files = {}
    for path in sorted(directory.iterdir()):
        if model_file_allowed(path.name):
            files[path.name] = path
        else:
            path.unlink()
    return files


def run_metrics(result: Any, history: list[tuple[int, dict[str, float]]]) -> dict[str, float]:
    """``train/loss``, ``train/steps`` and the last logged TRL metrics as ``train/<name>``."""
    metrics = {"train/loss": float(result.training_loss), "train/steps": float(result.global_step)}
    if history:
        metrics.update({k.replace("trl/", "train/", 1): v for k, v in history[-1][1].items() if k != "trl/loss"})
    return metrics


def _messages(policy: AgentPolicy, messages: list[Mapping[str, Any]]) -> list[dict[str, str]]:
    """Chat messages as the policy renders them: its system prompt first, tool calls as text in its format."""
    return [{"role": m["role"], "content": policy.message_text(m)} for m in with_system_prompt(policy, messages)]


def _answer(policy: AgentPolicy, messages: list[Mapping[str, Any]]) -> list[dict[str, str]]:
    return [{"role": "assistant", "content": policy.message_text(m)} for m in messages]


def _tools(row: Mapping[str, Any]) -> str:
    return json.dumps(row.get("tools") or [], sort_keys=True)


def _common_args(config: AgentTrainConfig, output_dir: Path, max_length: int | None = None) -> dict[str, Any]:
    """TRL arguments for a CPU update that saves nothing itself (the checkpoint is written as safetensors here).

    Under torchrun: ``ceil(batch_size / world)`` rows per rank (the effective batch stays ``batch_size``) and DDP
    over gloo (the update runs on CPU tensors).
    """
    world = distributed.world()
    args = {"output_dir": str(output_dir), "max_steps": config.steps, "learning_rate": config.lr,
            "per_device_train_batch_size": distributed.per_rank(config.batch_size, world), "seed": config.seed,
            "data_seed": config.seed, "bf16": False, "activation_checkpointing": False, "use_cpu": True,
            "report_to": [], "save_strategy": "no", "logging_steps": config.logging_steps, "disable_tqdm": True,
            "dataloader_num_workers": 0, "max_length": max_length or None}
    if world > 1:
        args["ddp_backend"] = "gloo"
    return args


def _peft(config: AgentTrainConfig) -> Any:
    if not config.lora:
        return None
    from peft import LoraConfig

    return LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, target_modules="all-linear", task_type="CAUSAL_LM")


def _dataset(examples: list[dict[str, Any]]) -> Any:
    from datasets import Dataset as HFDataset

    return HFDataset.from_list(examples)


def _length(tokenizer: Any, prompt: list[dict[str, str]], *answers: list[dict[str, str]]) -> int:
    longest = max(answers, key=lambda a: len(a[0]["content"]))
    text = tokenizer.apply_chat_template(prompt + longest, tokenize=False)
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


class AgentSFTTrainer(AgentTRLTrainer):
    """TRL ``SFTTrainer`` on approved answers and corrections (prompt-completion, loss on the answer only)."""

    Config = SFTConfig
    signal = "demonstration"
    description = "agents: TRL SFT on approved answers + corrections (the default recipe; replay keeps the old world)"

    def selection(self, config: SFTConfig) -> str:
        """Demonstrations from the configured sources."""
        return f"demonstrations from {config.sources}"

    def rows(self, rows: list[dict[str, Any]], config: SFTConfig) -> list[dict[str, Any]]:
        """Demonstrations whose source is one of ``config.sources``."""
        return [r for r in rows if r["source"] in config.sources]

    def example(self, policy: AgentPolicy, row: Mapping[str, Any]) -> dict[str, Any]:
        """``prompt``/``completion`` messages and ``tools``."""
        return {"prompt": _messages(policy, row["prompt"]), "completion": _answer(policy, row["completion"]),
                "tools": _tools(row)}

    def length(self, tokenizer: Any, example: Mapping[str, Any]) -> int:
        """Tokens of prompt and answer."""
        return _length(tokenizer, example["prompt"], example["completion"])

    def make_trainer(self, policy: AgentPolicy, model: Any, tokenizer: Any, examples: list[dict[str, Any]],
                     config: SFTConfig, output_dir: Path, callbacks: list[Any]) -> Any:
        """``trl.SFTTrainer`` with completion-only loss."""
        import trl

        args = trl.SFTConfig(**_common_args(config, output_dir, config.max_length), completion_only_loss=True)
        return trl.SFTTrainer(model=model, args=args, train_dataset=_dataset(_with_tools(examples)),
                              processing_class=tokenizer, peft_config=_peft(config), callbacks=callbacks)


class AgentDPOTrainer(AgentTRLTrainer):
    """TRL ``DPOTrainer`` on preference pairs, the frozen champion as reference, with the SFT term."""

    Config = DPOConfig
    signal = "pair"
    description = "agents: TRL DPO on preference pairs (edits, ratings, judges) with an SFT term"

    def example(self, policy: AgentPolicy, row: Mapping[str, Any]) -> dict[str, Any]:
        """``prompt``/``chosen``/``rejected`` messages and ``tools``."""
        return {"prompt": _messages(policy, row["prompt"]), "chosen": _answer(policy, row["chosen"]),
                "rejected": _answer(policy, row["rejected"]), "tools": _tools(row)}

    def length(self, tokenizer: Any, example: Mapping[str, Any]) -> int:
        """Tokens of prompt and the longer answer."""
        return _length(tokenizer, example["prompt"], example["chosen"], example["rejected"])

    def make_trainer(self, policy: AgentPolicy, model: Any, tokenizer: Any, examples: list[dict[str, Any]],
                     config: DPOConfig, output_dir: Path, callbacks: list[Any]) -> Any:
        """``trl.DPOTrainer`` (``loss_type=["sigmoid", "sft"]`` unless ``sft_weight`` is 0)."""
        import trl

        losses = {"loss_type": ["sigmoid", "sft"], "loss_weights": [1.0, config.sft_weight]} \
            if config.sft_weight > 0 else {"loss_type": ["sigmoid"]}
        args = trl.DPOConfig(**_common_args(config, output_dir, config.max_length), beta=config.beta, **losses)
        reference = None if config.lora else policy.fresh_copy()[0]
        return trl.DPOTrainer(model=model, ref_model=reference, args=args,
                              train_dataset=_dataset(_with_tools(examples)), processing_class=tokenizer,
                              peft_config=_peft(config), callbacks=callbacks)


class AgentKTOTrainer(AgentTRLTrainer):
    """TRL ``KTOTrainer`` on thumbs up/down (unpaired binary labels), the frozen champion as reference."""

    Config = KTOConfig
    signal = "binary"
    description = "agents: TRL KTO on thumbs up/down"

    def rows(self, rows: list[dict[str, Any]], config: KTOConfig) -> list[dict[str, Any]]:
        """Shuffled (KTO reads in order) and needing both labels and more than one row."""
        import random

        rows = list(rows)
        random.Random(config.seed).shuffle(rows)
        return rows

    def example(self, policy: AgentPolicy, row: Mapping[str, Any]) -> dict[str, Any]:
        """``prompt``/``completion`` messages, a bool ``label`` and ``tools``."""
        return {"prompt": _messages(policy, row["prompt"]), "completion": _answer(policy, row["completion"]),
                "label": bool(row["label"]), "tools": _tools(row)}

    def length(self, tokenizer: Any, example: Mapping[str, Any]) -> int:
        """Tokens of prompt and answer."""
        return _length(tokenizer, example["prompt"], example["completion"])

    def make_trainer(self, policy: AgentPolicy, model: Any, tokenizer: Any, examples: list[dict[str, Any]],
                     config: KTOConfig, output_dir: Path, callbacks: list[Any]) -> Any:
        """``trl.KTOTrainer``."""
        import trl

        labels = {e["label"] for e in examples}
        if len(labels) < 2:
            raise DatasetError(f"KTO needs thumbs up and thumbs down; all {len(examples)} rows are "
                               f"{'up' if labels == {True} else 'down'}")
        if config.batch_size < 2:
            raise ConfigError(f"KTO needs batch_size >= 2 (its KL term pairs rows of a batch), got {config.batch_size}")
        args = trl.KTOConfig(**_common_args(config, output_dir, config.max_length), beta=config.beta,
                             desirable_weight=config.desirable_weight, undesirable_weight=config.undesirable_weight)
        reference = None if config.lora else policy.fresh_copy()[0]
        return trl.KTOTrainer(model=model, ref_model=reference, args=args,
                              train_dataset=_dataset(_with_tools(examples)), processing_class=tokenizer,
                              peft_config=_peft(config), callbacks=callbacks)


def _with_tools(examples: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The examples with ``tools`` parsed back to schemas (TRL passes them to the chat template)."""
    return [{**e, "tools": json.loads(e["tools"]) or None} for e in examples]


@atexit.register
def _cleanup() -> None:
    """Remove the update directories once the process ends (the bundle logged to MLflow holds the copy)."""
    for path in _OUTPUTS:
        shutil.rmtree(path, ignore_errors=True)
