"""``AgentPolicy``: a Hugging Face causal LM with its tokenizer, chat template, system prompt and tools.

The policy part of an agent bundle is ``policy/agent.json`` (system prompt, OpenAI tool schemas, tool-call
format, generation defaults, LoRA base reference) plus the checkpoint's files under ``policy/model/``. Only
JSON, safetensors and Jinja files are accepted, configs naming remote code (``auto_map``) are refused, and
the model loads with ``trust_remote_code=False``: nothing is unpickled and no downloaded code runs.
``generate`` returns each completion with its log-probability under the sampling distribution actually used
(temperature and top-p applied), which is what off-policy evaluation from logs needs.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlops_plugin.bundle.hashing import check_finite_json, sha256_file, sha256_json
from rlops_plugin.bundle.storage import check_safetensors_header, read_json
from rlops_plugin.bundle.strict import check_keys
from rlops_plugin.errors import ConfigError, IntegrityError, UnsafeArtifactError

AGENT_KIND = "agent"
AGENT_FILE = "policy/agent.json"
MODEL_PREFIX = "policy/model/"
TOOL_CALL_FORMATS = ("json", "hermes")
_MODEL_FILES = {"config.json", "generation_config.json", "model.safetensors", "model.safetensors.index.json",
                "adapter_config.json", "adapter_model.safetensors", "tokenizer.json", "tokenizer_config.json",
                "special_tokens_map.json", "chat_template.jinja"}
_SHARD = re.compile(r"^model-\d{5}-of-\d{5}\.safetensors$")
_AGENT_KEYS = ("system_prompt", "system_prompt_ref", "tools", "tool_call_format", "generation", "base_model")
_GENERATION_KEYS = ("max_new_tokens", "temperature", "top_p")


def model_file_allowed(name: str) -> bool:
    """Whether a checkpoint file may be part of an agent bundle (JSON, safetensors, Jinja; no pickle, no code)."""
    return name in _MODEL_FILES or bool(_SHARD.match(name))


@dataclass(frozen=True)
class Generated:
    """One sampled completion: its tokens, log-probabilities and why it ended."""

    token_ids: list[int]
    logprob: float
    """Log-probability under the distribution that sampled it (0.0 for greedy decoding: probability 1)."""
    model_logprob: float
    """Log-probability under the model itself (temperature 1, no truncation)."""
    finish_reason: str
    """``stop`` (end of sequence), ``length`` (max_new_tokens) or ``timeout`` (the server's time budget)."""


class AgentPolicy:
    """An LLM agent policy: checkpoint files (hashed), agent configuration (JSON), lazily loaded model."""

    kind = AGENT_KIND
    observation_space = None

    def __init__(self, files: Mapping[str, Path], agent: Mapping[str, Any]) -> None:
        self.files = {name: Path(path) for name, path in sorted(files.items())}
        for name in self.files:
            if not model_file_allowed(name):
                raise UnsafeArtifactError(f"{MODEL_PREFIX}{name}: not an allowed checkpoint file (JSON, safetensors "
                                          "and chat_template.jinja only: no pickle, no code)")
        self.agent = _check_agent(agent)
        self.adapter = "adapter_config.json" in self.files
        needed = {"tokenizer.json"} | ({"adapter_config.json", "adapter_model.safetensors"} if self.adapter
                                       else {"config.json"})
        missing = sorted(needed - set(self.files))
        if not self.adapter and not any(n == "model.safetensors" or _SHARD.match(n) for n in self.files):
            missing.append("model.safetensors")
        if missing:
            raise IntegrityError(f"{MODEL_PREFIX}: missing {missing}")
        if self.adapter and not self.agent.get("base_model"):
            raise ConfigError("agent.base_model: a LoRA adapter needs its base model (uri and policy_sha256)")
        for name in ("config.json", "tokenizer_config.json", "adapter_config.json"):
            if name in self.files:
                data = read_json(self.files[name], MODEL_PREFIX + name)
                if isinstance(data, dict) and "auto_map" in data:
                    raise UnsafeArtifactError(f"{MODEL_PREFIX}{name}: names remote code (auto_map); "
                                              "trust_remote_code is refused")
        for name, path in self.files.items():
            if name.endswith(".safetensors"):
                check_safetensors_header(path, MODEL_PREFIX + name)
        self._file_hashes = {name: sha256_file(path) for name, path in self.files.items()}
        self._lock = threading.Lock()
        self._loaded: tuple[Any, Any] | None = None
        self._staging: tempfile.TemporaryDirectory[str] | None = None

    # ----- description ----------------------------------------------------------------
    @property
    def architecture(self) -> str:
        """The transformers ``model_type`` (``llama``, ...), or ``lora`` for an adapter (see ``agent.base_model``)."""
        if self.adapter:
            return "lora"
        return str(read_json(self.files["config.json"], MODEL_PREFIX + "config.json").get("model_type", "unknown"))

    @property
    def tools(self) -> list[dict[str, Any]]:
        """Tool schemas offered by default (OpenAI function format)."""
        return list(self.agent.get("tools") or [])

    @property
    def action_space(self) -> dict[str, Any]:
        """What an answer is: text or a call to one of the tools."""
        return {"type": "chat", "tools": [t["function"]["name"] for t in self.tools]}

    def describe(self) -> dict[str, Any]:
        """Architecture, agent configuration and checkpoint file hashes (what the policy hash covers)."""
        return {"architecture": self.architecture, "action_space": self.action_space, "agent": self.agent,
                "files": dict(self._file_hashes)}

    def sha256(self) -> str:
        """Content hash of the agent configuration and every checkpoint file."""
        return sha256_json(self.describe())

    def system_prompt(self) -> str | None:
        """The system prompt: inline, or from MLflow's prompt registry at the pinned version, hash-checked."""
        ref = self.agent.get("system_prompt_ref")
        if ref is None:
            return self.agent.get("system_prompt")
        import mlflow

        template = mlflow.genai.load_prompt(ref["uri"]).template
        if not isinstance(template, str) or sha256_json(template) != ref["sha256"]:
            raise IntegrityError(f"agent.system_prompt_ref {ref['uri']}: the registry's template does not match "
                                 "the hash recorded in the bundle")
        return template

    # ----- loading ----------------------------------------------------------------------
    @property
    def model_dir(self) -> Path:
        """The directory holding the checkpoint files (they must share one)."""
        dirs = {path.parent for path in self.files.values()}
        if len(dirs) != 1:
            raise ConfigError(f"agent checkpoint files lie in several directories: {sorted(map(str, dirs))}")
        return dirs.pop()

    def verify_files(self) -> None:
        """Re-hash every checkpoint file against the hash taken when the policy was made (or loaded)."""
        for name, path in self.files.items():
            if sha256_file(path) != self._file_hashes[name]:
                raise IntegrityError(f"{MODEL_PREFIX}{name}: changed on disk since it was verified ({path})")

    def load(self, base_model: Any = None) -> tuple[Any, Any]:
        """``(model, tokenizer)``, loaded once from the verified files (re-hashed just before loading).

        Once loaded it returns without the lock, which ``generate`` holds for a whole generation: the
        server's event loop renders and decodes through here and must not wait on a running generation.
        """
        loaded = self._loaded
        if loaded is not None:
            return loaded
        with self._lock:
            if self._loaded is None:
                self.verify_files()
                directory = self._load_dir()
                self._loaded = (self._load_model(base_model, directory), self._load_tokenizer(directory))
            return self._loaded

    def fresh_copy(self) -> tuple[Any, Any]:
        """A new ``(model, tokenizer)`` from the verified files, for trainers: TRL patches a model in place,
        so the served (cached) instance is never handed to one, and the frozen reference is another copy."""
        self.verify_files()
        directory = self._load_dir()
        return self._load_model(None, directory), self._load_tokenizer(directory)

    def message_text(self, message: Mapping[str, Any]) -> str:
        """A chat message's text as the model reads and writes it (tool calls in the policy's format)."""
        return self._message_text(message)

    def _load_dir(self) -> Path:
        """A directory holding exactly the verified files, for loaders that read whole directories.

        transformers reads whatever a checkpoint directory holds (measured with 5.24: an unlisted
        ``adapter_config.json`` makes it apply adapter weights to a full model, an ``added_tokens.json`` adds
        tokens): when the source directory holds files the policy left out (a README, other tokenizer files),
        links to the listed files are staged in a private directory instead.
        """
        directory = self.model_dir
        if {path.name for path in directory.iterdir()} == set(self.files):
            return directory
        self._staging = tempfile.TemporaryDirectory(prefix="rlops-agent-")
        staged = Path(self._staging.name)
        for name, path in self.files.items():
            os.symlink(path.resolve(), staged / name)
        return staged

    def _load_model(self, base_model: Any, directory: Path) -> Any:
        import torch
        from transformers import AutoModelForCausalLM

        if self.adapter:
            from peft import PeftModel

            if base_model is None:
                base_model = self._verified_base().load()[0]
            model = PeftModel.from_pretrained(base_model, str(directory), is_trainable=False)
        else:
            model = AutoModelForCausalLM.from_pretrained(str(directory), local_files_only=True,
                                                         trust_remote_code=False, use_safetensors=True,
                                                         dtype=torch.float32)
        model.eval()
        return model

    def _verified_base(self) -> AgentPolicy:
        """The adapter's base policy, loaded from its URI and checked against the recorded policy hash."""
        from rlops_plugin.flavor.model import load_model

        ref = self.agent["base_model"]
        base = load_model(ref["uri"]).policy
        if not isinstance(base, AgentPolicy) or base.adapter:
            raise IntegrityError(f"agent.base_model {ref['uri']}: not a full-weight agent policy")
        if base.sha256() != ref["policy_sha256"]:
            raise IntegrityError(f"agent.base_model {ref['uri']}: policy hash {base.sha256()[:12]}... differs from "
                                 f"the recorded {str(ref['policy_sha256'])[:12]}...")
        return base

    def _load_tokenizer(self, directory: Path) -> Any:
        from transformers import PreTrainedTokenizerFast

        tokenizer = PreTrainedTokenizerFast.from_pretrained(str(directory), local_files_only=True)
        if tokenizer.eos_token_id is None:
            raise ConfigError(f"{MODEL_PREFIX}tokenizer: no eos token; generation could not stop")
        if not tokenizer.chat_template:
            raise ConfigError(f"{MODEL_PREFIX}: no chat template (chat_template.jinja or tokenizer_config.json)")
        return tokenizer

    @property
    def context_length(self) -> int:
        """Longest prompt plus completion the model accepts (``max_position_embeddings``)."""
        model, _ = self.load()
        return int(getattr(model.config, "max_position_embeddings", 2048))

    # ----- prompting and tool calls -----------------------------------------------------
    def render(self, messages: Sequence[Mapping[str, Any]], tools: Sequence[Mapping[str, Any]] | None,
               prefix: str = "") -> list[int]:
        """Token ids of the chat prompt (assistant tool calls written in the policy's tool-call format)."""
        _, tokenizer = self.load()
        flat = [{"role": m["role"], "content": self._message_text(m)} for m in messages]
        text = tokenizer.apply_chat_template(flat, tools=list(tools) if tools else None, add_generation_prompt=True,
                                             tokenize=False)
        return tokenizer(text + prefix, add_special_tokens=False)["input_ids"]

    def _message_text(self, message: Mapping[str, Any]) -> str:
        content = message.get("content") or ""
        calls = message.get("tool_calls") or []
        if calls:
            content += self.format_tool_calls([{"name": c["function"]["name"],
                                                "arguments": _arguments(c["function"].get("arguments"))}
                                               for c in calls])
        return content

    def format_tool_calls(self, calls: Sequence[Mapping[str, Any]]) -> str:
        """Tool calls as the model writes them (``json``: the call object itself; ``hermes``: tagged)."""
        objects = [{"name": c["name"], "arguments": c["arguments"]} for c in calls]
        if self.agent["tool_call_format"] == "hermes":
            return "".join(f"<tool_call>{json.dumps(o)}</tool_call>" for o in objects)
        return json.dumps(objects[0] if len(objects) == 1 else objects)

    def call_prefix(self, tool: str | None) -> str:
        """Text that starts a call (to ``tool`` when named): prefilled when ``tool_choice`` forces a call."""
        if self.agent["tool_call_format"] == "hermes":
            return "<tool_call>" + (f'{{"name": "{tool}", "arguments": ' if tool else "")
        return f'{{"name": "{tool}", "arguments": ' if tool else '{"name": "'

    def parse_tool_calls(self, text: str) -> tuple[str | None, list[dict[str, Any]]]:
        """Split generated text into content and tool calls ``[{"name", "arguments"}]``."""
        if self.agent["tool_call_format"] == "hermes":
            calls, rest = [], text
            for block in re.findall(r"<tool_call>(.*?)</tool_call>", text, flags=re.S):
                call = _call_object(block)
                if call is not None:
                    calls.append(call)
                    rest = rest.replace(f"<tool_call>{block}</tool_call>", "", 1)
            return (rest.strip() or None), calls
        stripped = text.strip()
        try:
            parsed = json.loads(stripped)
        except ValueError:
            return text, []
        items = parsed if isinstance(parsed, list) else [parsed]
        calls = [c for c in (_call_object(item) for item in items) if c is not None]
        return (None, calls) if calls and len(calls) == len(items) else (text, [])

    # ----- generation -------------------------------------------------------------------
    def generate(self, prompt_ids: Sequence[int], *, n: int = 1, temperature: float = 1.0, top_p: float = 1.0,
                 max_new_tokens: int = 64, deadline: float | None = None, seed: int | None = None) -> list[Generated]:
        """Sample ``n`` completions of ``prompt_ids`` with their exact log-probabilities.

        ``temperature == 0`` decodes greedily (log-probability 0: the executed policy is deterministic; ``n``
        identical answers). With
        ``top_p < 1`` the log-probability is under the truncated, renormalised distribution that sampled the
        token. ``deadline`` (``time.monotonic()``) stops generation; such completions end in ``timeout``.
        """
        import torch
        from transformers import GenerationConfig, StoppingCriteria, StoppingCriteriaList

        model, tokenizer = self.load()

        class _Deadline(StoppingCriteria):
            def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
                hit = deadline is not None and time.monotonic() > deadline
                return torch.full((input_ids.shape[0],), hit, dtype=torch.bool)

        stops = {tokenizer.eos_token_id}  # and the end-of-turn tokens the checkpoint's generation config lists
        listed = getattr(model.generation_config, "eos_token_id", None)
        stops.update(listed if isinstance(listed, list) else [] if listed is None else [listed])
        sample = temperature > 0
        config = GenerationConfig(
            max_new_tokens=max_new_tokens, do_sample=sample, num_return_sequences=n if sample else 1,
            top_k=0 if sample else None,
            temperature=temperature if sample else None, top_p=top_p if sample else None,
            eos_token_id=sorted(stops),
            pad_token_id=tokenizer.eos_token_id if tokenizer.pad_token_id is None else tokenizer.pad_token_id,
            bos_token_id=tokenizer.bos_token_id, output_scores=True, output_logits=True, return_dict_in_generate=True)
        input_ids = torch.tensor([list(prompt_ids)])
        with self._lock, torch.inference_mode():
            if seed is not None:
                torch.manual_seed(seed)
            out = model.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids),
                                 generation_config=config, stopping_criteria=StoppingCriteriaList([_Deadline()]))
            executed = model.compute_transition_scores(out.sequences, out.scores, normalize_logits=True)
            raw = model.compute_transition_scores(out.sequences, out.logits, normalize_logits=True)
        timed_out = deadline is not None and time.monotonic() > deadline
        results = []
        for row in range(out.sequences.shape[0]):
            tokens = out.sequences[row, input_ids.shape[1]:].tolist()
            length = len(tokens)
            ends = [i for i, token in enumerate(tokens) if token in stops]
            if ends:
                length = ends[0] + 1
                reason = "stop"
            else:
                reason = "timeout" if timed_out else "length"
            results.append(Generated(
                token_ids=tokens[:length],
                logprob=float(executed[row, :length].sum()) if sample else 0.0,
                model_logprob=float(raw[row, :length].sum()), finish_reason=reason))
        return results if sample else results * n  # greedy: n identical answers

    def sequence_logprob(self, prompt_ids: Sequence[int], completion_ids: Sequence[int], temperature: float = 1.0,
                         top_p: float = 1.0) -> float:
        """Log-probability of ``completion_ids`` after ``prompt_ids`` under what ``generate`` samples at these settings.

        Scoring a logged answer under a candidate is what off-policy evaluation needs. One forward pass over
        prompt + completion; each position's logits then go through the logits processors that ``generate``
        runs, built by transformers' own builder (``_get_logits_processor``) from the same generation config
        merged with the checkpoint's ``generation_config.json`` as ``generate`` merges it, so temperature,
        top-p truncation and any checkpoint default (a repetition penalty, ...) apply identically. Equals
        :attr:`Generated.logprob` of a sampled completion (and :attr:`Generated.model_logprob` at temperature 1,
        top_p 1 when the checkpoint adds no processor). ``temperature == 0`` is greedy: 0.0 when every token is
        the processed argmax, else ``-inf``. The completion's stop token, when it ended on one, is part of it.
        """
        import torch
        from transformers import GenerationConfig

        if not 0.0 <= temperature or not 0.0 < top_p <= 1.0:
            raise ConfigError(f"sequence_logprob: temperature >= 0 and top_p in (0, 1], got {temperature}, {top_p}")
        prompt, completion = list(prompt_ids), list(completion_ids)
        if not prompt:
            raise ConfigError("sequence_logprob: prompt_ids is empty (the first token needs a context)")
        if not completion:
            return 0.0
        model, tokenizer = self.load()
        stops = {tokenizer.eos_token_id}  # as in generate: the stop tokens feed min-length processors
        listed = getattr(model.generation_config, "eos_token_id", None)
        stops.update(listed if isinstance(listed, list) else [] if listed is None else [listed])
        sample = temperature > 0
        config = GenerationConfig(
            max_new_tokens=len(completion), do_sample=sample, top_k=0 if sample else None,
            temperature=temperature if sample else None, top_p=top_p if sample else None,
            eos_token_id=sorted(stops),
            pad_token_id=tokenizer.eos_token_id if tokenizer.pad_token_id is None else tokenizer.pad_token_id,
            bos_token_id=tokenizer.bos_token_id)
        ids = torch.tensor([prompt + completion])
        start = len(prompt)
        with self._lock, torch.inference_mode():
            merged, _ = model._prepare_generation_config(config)
            model._prepare_special_tokens(merged, True, device=ids.device)
            processors = model._get_logits_processor(generation_config=merged, input_ids_seq_length=start,
                                                     encoder_input_ids=ids[:, :start], device=ids.device,
                                                     model_kwargs={})
            logits = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits[0, start - 1:-1].float()
            targets = torch.tensor(completion)
            if len(processors):
                logits = torch.cat([processors(ids[:, :start + t], logits[t:t + 1].clone())
                                    for t in range(len(completion))])
            if not sample:
                return 0.0 if bool((logits.argmax(-1) == targets).all()) else float("-inf")
            return float(torch.log_softmax(logits, -1).gather(1, targets[:, None]).sum())

    def decode(self, token_ids: Sequence[int]) -> str:
        """Text of generated tokens (special tokens dropped)."""
        _, tokenizer = self.load()
        return tokenizer.decode(list(token_ids), skip_special_tokens=True)


def _arguments(value: Any) -> Any:
    """OpenAI sends tool-call arguments as a JSON string; the model writes them as an object."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value if value is not None else {}


def _call_object(item: Any) -> dict[str, Any] | None:
    if isinstance(item, str):
        try:
            item = json.loads(item)
        except ValueError:
            return None
    if isinstance(item, dict) and isinstance(item.get("name"), str) and isinstance(item.get("arguments", {}), dict):
        return {"name": item["name"], "arguments": item.get("arguments", {})}
    return None


def _check_agent(agent: Mapping[str, Any]) -> dict[str, Any]:
    """Validate ``agent.json``: known keys, tool schemas in OpenAI function format, generation defaults."""
    from jsonschema import SchemaError
    from jsonschema.validators import validator_for

    check_keys(agent, _AGENT_KEYS, "agent")
    out = dict(agent)
    check_finite_json(out, "agent")
    out.setdefault("tool_call_format", "json")
    if out["tool_call_format"] not in TOOL_CALL_FORMATS:
        raise ConfigError(f"agent.tool_call_format: one of {list(TOOL_CALL_FORMATS)}, got {out['tool_call_format']!r}")
    if out.get("system_prompt") is not None and not isinstance(out["system_prompt"], str):
        raise ConfigError("agent.system_prompt: a string")
    ref = out.get("system_prompt_ref")
    if ref is not None:
        check_keys(ref, ("uri", "sha256", "template"), "agent.system_prompt_ref", required=("uri", "sha256"))
        if out.get("system_prompt") is not None:
            raise ConfigError("agent: give system_prompt or system_prompt_ref, not both")
    names = set()
    for i, tool in enumerate(out.get("tools") or []):
        where = f"agent.tools[{i}]"
        function = tool.get("function") if isinstance(tool, Mapping) else None
        if not isinstance(function, Mapping) or tool.get("type") != "function":
            raise ConfigError(f"{where}: an OpenAI tool {{'type': 'function', 'function': {{name, parameters}}}}")
        name = tool["function"].get("name")
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", name) or name in names:
            raise ConfigError(f"{where}.function.name: a unique name of letters, digits, _ or - (got {name!r})")
        names.add(name)
        params = tool["function"].get("parameters", {"type": "object"})
        try:
            validator_for(params).check_schema(params)
        except SchemaError as exc:
            raise ConfigError(f"{where}.function.parameters: not a valid JSON Schema ({exc.message})") from None
    generation = out.get("generation") or {}
    check_keys(generation, _GENERATION_KEYS, "agent.generation")
    out["generation"] = dict(generation)
    base = out.get("base_model")
    if base is not None:
        check_keys(base, ("uri", "policy_sha256"), "agent.base_model", required=("uri", "policy_sha256"))
    return out
