"""Agent policy updates with TRL's GRPO in the task environment: sampled answers, graded, compared in groups.

GRPO needs no logged data: each step samples ``num_generations`` answers to tasks of the bundle's own task suite
(``init.env_spec.tasks``), scores every answer with the bundle's graders (``init.reward_spec.grade`` on the tool
calls parsed from the text exactly as the server parses them) and, optionally, with a trained reward model
(:mod:`rlops_plugin.training.agent_reward`), and moves the policy towards the answers that beat their group's mean,
with a KL penalty (``beta``) towards the champion it started from.

Prompts are rendered to text here as the server renders them (the policy's system prompt, the task's tools or the
policy's in the chat template) and handed to TRL as plain text: TRL's conversational path passes its own
``tools`` (functions it would execute) to the chat template, which is not how the agent is served.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from rlops_plugin.bundle.bundle import PolicyBundle
from rlops_plugin.errors import ConfigError
from rlops_plugin.experience.dataset import Dataset
from rlops_plugin.kinds.agent.policy import AgentPolicy
from rlops_plugin.kinds.agent.specs import GraderSpec
from rlops_plugin.kinds.agent.tasks import DEFAULT_MAX_NEW_TOKENS, with_system_prompt
from rlops_plugin.training import distributed
from rlops_plugin.training.agent_reward import reward_model_scorer
from rlops_plugin.training.agent_trl import (
    _OUTPUTS,
    _common_args,
    history_callback,
    run_metrics,
    run_trl,
    save_checkpoint,
)
from rlops_plugin.training.base import Progress, Trainer, TrainResult

Reward = Callable[..., list[float]]


@dataclass
class GRPOConfig:
    """Settings of a GRPO update in the task environment (CPU-safe: fp32, no activation checkpointing)."""

    steps: int = 40
    """Optimizer steps."""
    lr: float = 1e-4
    """Learning rate."""
    batch_size: int = 8
    """Sampled answers per optimizer step, a multiple of ``num_generations`` (``batch_size / num_generations``
    tasks per step)."""
    num_generations: int = 4
    """Answers sampled per task: GRPO's advantage is an answer's reward against its group's mean (at least 2)."""
    beta: float = 0.04
    """Strength of the KL penalty towards the champion the update starts from (0: no reference model)."""
    max_completion_length: int = 0
    """Longest sampled answer in tokens; 0: the agent's ``generation.max_new_tokens`` (64 without one)."""
    temperature: float = 1.0
    """Sampling temperature of the answers (GRPO learns from their differences: do not go near 0)."""
    seed: int = 0
    """Seed of sampling, shuffling and dropout."""
    tasks: list[str] = field(default_factory=list)
    """Ids of the tasks to learn on; empty: the whole task suite."""
    reward_model: str = ""
    """A trained reward model whose score is added to the graders': a registered one (``models:/NAME@ALIAS``,
    verified against its registration) or a directory (``train_reward_model``'s); empty: graders only."""
    reward_model_weight: float = 1.0
    """Weight of the reward model's score against the graders' combined score (weight 1)."""
    torch_threads: int = 0
    """CPU threads for the update (0: one for a model under 5M parameters, else torch's current setting)."""
    logging_steps: int = 10
    """Steps between recorded TRL metrics (the last step is always recorded)."""

    def __post_init__(self) -> None:
        if self.num_generations < 2:
            raise ConfigError(f"GRPOConfig.num_generations: at least 2 (got {self.num_generations})")
        if self.batch_size < 1 or self.batch_size % self.num_generations:
            raise ConfigError(f"GRPOConfig.batch_size: a multiple of num_generations ({self.num_generations}), "
                              f"got {self.batch_size}")
        if not self.temperature > 0:
            raise ConfigError(f"GRPOConfig.temperature: above 0 (got {self.temperature})")
        if self.steps < 1 or self.beta < 0:
            raise ConfigError(f"GRPOConfig: steps >= 1 and beta >= 0 (got {self.steps}, {self.beta})")


def grader_reward(policy: AgentPolicy, reward_spec: GraderSpec, tasks: Sequence[Mapping[str, Any]]) -> Reward:
    """TRL reward function: each completion's combined grader score on its task (``task_index`` column)."""

    def graders(prompts: list[str], completions: list[str], task_index: list[int], **_: Any) -> list[float]:
        out = []
        for text, index in zip(completions, task_index, strict=True):
            task = tasks[index]
            scores = reward_spec.grade(_choice(policy, text), task, tools=_task_tools(policy, task))
            out.append(float(scores.get("combined", 0.0)))
        return out

    return graders


def reward_model_reward(policy: AgentPolicy, scorer: Any, tasks: Sequence[Mapping[str, Any]]) -> Reward:
    """TRL reward function: a reward model's score of each completion (parsed as served) to its task's messages."""

    def reward_model(prompts: list[str], completions: list[str], task_index: list[int], **_: Any) -> list[float]:
        return scorer.scores([(tasks[i]["messages"], _choice(policy, text), _task_tools(policy, tasks[i]))
                              for text, i in zip(completions, task_index, strict=True)])

    return reward_model


def _choice(policy: AgentPolicy, text: str) -> dict[str, Any]:
    """A completion as the server logs it: content and the tool calls parsed from it."""
    content, calls = policy.parse_tool_calls(text)
    return {"content": content, "tool_calls": calls}


def _task_tools(policy: AgentPolicy, task: Mapping[str, Any]) -> list[dict[str, Any]]:
    return list(task.get("tools") or policy.tools)


def prompt_text(policy: AgentPolicy, tokenizer: Any, task: Mapping[str, Any]) -> str:
    """A task's prompt as the server renders it (system prompt, tools, generation prompt), as text for TRL.

    TRL tokenizes text prompts with the tokenizer's special tokens; a template that writes the BOS token itself
    would then get two, so a leading BOS is left to the tokenizer, and any other difference is refused.
    """
    messages = [{"role": m["role"], "content": policy.message_text(m)}
                for m in with_system_prompt(policy, task["messages"])]
    tools = _task_tools(policy, task)
    text = tokenizer.apply_chat_template(messages, tools=tools or None, add_generation_prompt=True, tokenize=False)
    served = tokenizer(text, add_special_tokens=False)["input_ids"]
    if tokenizer(text)["input_ids"] == served:
        return text
    bos = tokenizer.bos_token
    if bos and text.startswith(bos) and tokenizer(text[len(bos):])["input_ids"] == served:
        return text[len(bos):]
    raise ConfigError(f"task {task.get('id')!r}: the tokenizer adds special tokens that the served prompt does not "
                      "have; GRPO would train on another prompt than the one served")


class AgentGRPOTrainer(Trainer):
    """TRL ``GRPOTrainer`` on the bundle's task suite, rewarded by its graders (and optionally a reward model)."""

    logged_metrics: ClassVar[tuple[str, ...]] = ("train/loss", "train/steps")
    """What the trainer reports while training (the metrics a search space may prune on)."""

    Config = GRPOConfig
    policy_kind: ClassVar[str] = "agent"
    data_kind: ClassVar[str] = "simulator"
    description = "agents: TRL GRPO on the task suite, rewarded by the bundle's graders (+ an optional reward model)"

    def train(self, init: PolicyBundle, data: Dataset | None, config: GRPOConfig,
              progress: Progress | None = None) -> TrainResult:
        """Sample, grade and update for ``config.steps`` steps from ``init``'s checkpoint; a new agent policy."""
        import torch
        from datasets import Dataset as HFDataset

        if data is not None:
            raise ConfigError("agent GRPO learns in the task environment; do not pass a dataset")
        policy = init.policy
        if not isinstance(policy, AgentPolicy):
            raise ConfigError(f"{type(self).__name__} trains agent policies, not {getattr(policy, 'kind', '?')}")
        if policy.adapter:
            raise ConfigError("the init policy is a LoRA adapter: train from its base agent instead")
        if not isinstance(init.reward_spec, GraderSpec):
            raise ConfigError("agent GRPO rewards with the bundle's graders; its reward part is not a GraderSpec")
        tasks = _tasks(init, config)
        dist = distributed.init()
        if config.batch_size % dist.world_size:
            raise ConfigError(f"GRPOConfig.batch_size: a multiple of the {dist.world_size} processes (each samples an "
                              f"equal share of the {config.batch_size} answers), got {config.batch_size}")
        torch.manual_seed(config.seed)
        model, tokenizer = policy.fresh_copy()
        rows = [{"prompt": prompt_text(policy, tokenizer, task), "task_index": i} for i, task in enumerate(tasks)]
        rewards = [grader_reward(policy, init.reward_spec, tasks)]
        weights = [1.0]
        if config.reward_model:
            rewards.append(reward_model_reward(policy, reward_model_scorer(config.reward_model), tasks))
            weights.append(config.reward_model_weight)
        limit = config.max_completion_length or int((policy.agent.get("generation") or {}).get(
            "max_new_tokens", DEFAULT_MAX_NEW_TOKENS))
        history: list[tuple[int, dict[str, float]]] = []
        record = history_callback(history, progress, config.steps)

        trl_config, trl_trainer = _trl_grpo()
        out = Path(tempfile.mkdtemp(prefix="rlops-agent-grpo-"))
        _OUTPUTS.append(str(out))
        common = _common_args(config, out / "trl")  # type: ignore[arg-type]
        common.pop("max_length")
        args = trl_config(**common, num_generations=config.num_generations, beta=config.beta,
                          max_completion_length=limit, temperature=config.temperature, top_p=1.0, top_k=0,
                          reward_weights=weights, log_completions=False, shuffle_dataset=True,
                          model_init_kwargs={"use_safetensors": True, "local_files_only": True})
        trainer = trl_trainer(model=model, reward_funcs=rewards, args=args, train_dataset=HFDataset.from_list(rows),
                              processing_class=tokenizer, callbacks=[record])
        result, trained = run_trl(trainer, config.torch_threads)
        metrics = {"data/tasks": float(len(tasks)), **run_metrics(result, history)}
        if not distributed.is_main():  # rank 0 saves; see agent_trl's module docstring
            return TrainResult(policy, metrics, history)
        files = save_checkpoint(trained, tokenizer, out / "model")
        return TrainResult(AgentPolicy(files, policy.agent), metrics, history)


def _tasks(init: PolicyBundle, config: GRPOConfig) -> list[dict[str, Any]]:
    """The task-suite entries to learn on (``config.tasks`` by id, else all)."""
    suite = [dict(t) for t in getattr(init.env_spec, "tasks", ())]
    if not suite:
        raise ConfigError("agent GRPO learns on the bundle's task suite, which is empty")
    if not config.tasks:
        return suite
    by_id = {str(t["id"]): t for t in suite}
    unknown = sorted(set(config.tasks) - set(by_id))
    if unknown:
        raise ConfigError(f"GRPOConfig.tasks: {unknown} are not in the task suite ({len(suite)} tasks)")
    return [by_id[i] for i in config.tasks]


def _trl_grpo() -> tuple[type, type]:
    """TRL's ``GRPOConfig`` and ``GRPOTrainer``, imported with TRL's vLLM support switched off.

    TRL imports vLLM's engine whenever a package named ``vllm`` is importable. This project installs the vLLM wheel
    without its dependencies, for the protocol modules KServe's OpenAI data plane imports
    (``requirements/openai-dataplane.txt``), so that import fails (measured: ``No module named 'llguidance'``). GRPO
    here generates with transformers (``use_vllm=False``): TRL's check answers "no vLLM" while its GRPO modules load.
    """
    import importlib
    import sys

    if "trl.trainer.grpo_trainer" not in sys.modules:
        import_utils = importlib.import_module("trl.import_utils")
        available = import_utils.is_vllm_available
        import_utils.is_vllm_available = _no_vllm
        try:
            importlib.import_module("trl.trainer.grpo_trainer")
        finally:
            import_utils.is_vllm_available = available
    from trl.trainer.grpo_config import GRPOConfig as TRLGRPOConfig
    from trl.trainer.grpo_trainer import GRPOTrainer

    return TRLGRPOConfig, GRPOTrainer


def _no_vllm(min_version: str | None = None) -> bool:
    """TRL's ``is_vllm_available`` answering no (see :func:`_trl_grpo`)."""
    return False
