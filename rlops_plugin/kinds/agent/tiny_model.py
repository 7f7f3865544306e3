"""Tiny causal language models built locally: no hub, no download, for tests and demos of agent policies.

``build_tiny_model(conversations, out_dir)`` trains a byte-level BPE tokenizer with ``tokenizers`` on
the task's own text, builds a small Llama (hidden size <= 128) from a ``transformers`` config, trains
it briefly to continue each conversation's prompt with its answer (for a tool-using agent: the
task's tool-call format), and saves a Hugging Face checkpoint directory (safetensors, tokenizer.json
with a chat template, generation config) that loads with ``trust_remote_code=False``. Written here
because a hub download is what tests and air-gapped demos must not do; everything it calls is
``transformers``/``tokenizers``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlops_plugin.errors import ConfigError

BOS, EOS, PAD = "<s>", "</s>", "<pad>"
ROLE_TOKENS = ("<|system|>", "<|user|>", "<|assistant|>", "<|tool|>")
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}"
    "{% if m['role'] == 'assistant' %}{{ eos_token }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
"""Role tags around each message; an assistant turn ends with ``</s>`` (what generation stops on)."""


@dataclass(frozen=True)
class TinyModelConfig:
    """Size and training budget of a tiny model (defaults: ~0.1M parameters, seconds on a CPU)."""

    hidden_size: int = 64
    """Width of the model (at most 128: a test model, not a language model)."""
    layers: int = 2
    """Decoder layers."""
    heads: int = 4
    """Attention heads (must divide hidden_size)."""
    vocab_size: int = 400
    """BPE vocabulary trained on the conversations (special tokens included)."""
    max_length: int = 128
    """Longest tokenized conversation; longer ones are refused."""
    steps: int = 600
    """Optimizer steps over the conversations (full batch). Measured on an 18-ticket triage set: 600
    steps reproduce 18/18 answers greedily for seeds 0-4; 300 steps gave 11-18/18. That is recall of
    the training tickets: an unseen phrasing ("urgent: {} issue") is 0-4 of 6 (bench/agent_learning.py)."""
    lr: float = 3e-3
    """AdamW learning rate."""
    seed: int = 0
    """Seed of the weights' initialization."""

    def __post_init__(self) -> None:
        if not 8 <= self.hidden_size <= 128 or self.hidden_size % self.heads:
            raise ConfigError(f"hidden_size: 8..128 and divisible by heads ({self.heads}), got {self.hidden_size}")
        for name in ("layers", "heads", "steps", "max_length"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}: at least 1, got {getattr(self, name)}")


def render(messages: Sequence[dict[str, str]], add_generation_prompt: bool = False) -> str:
    """A conversation in the tiny models' chat format (what ``tokenizer.apply_chat_template`` gives)."""
    text = BOS + "".join(f"<|{m['role']}|>{m['content']}" + (EOS if m["role"] == "assistant" else "")
                         for m in messages)
    return text + ("<|assistant|>" if add_generation_prompt else "")


def train_tokenizer(texts: Sequence[str], vocab_size: int) -> Any:
    """A byte-level BPE ``PreTrainedTokenizerFast`` trained on ``texts`` (special and role tokens kept whole)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    special = [PAD, BOS, EOS, *ROLE_TOKENS]
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=special, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(texts, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token=BOS, eos_token=EOS, pad_token=PAD,
                                   additional_special_tokens=list(ROLE_TOKENS))
    fast.chat_template = CHAT_TEMPLATE
    return fast


def build_tiny_model(conversations: Sequence[Sequence[dict[str, str]]], out_dir: str | Path,
                     config: TinyModelConfig | None = None, corpus: Sequence[str] = ()) -> Path:
    """Train a tokenizer and a tiny Llama on ``conversations`` (lists of chat messages); save to ``out_dir``.

    The loss covers the assistant turns only, so the model learns to answer the prompts it saw.
    ``corpus``: more text for the tokenizer only (words a later fine-tuning will need, as a real model's
    vocabulary has them). Returns ``out_dir``, a Hugging Face checkpoint directory.
    """
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    config = config or TinyModelConfig()
    if not conversations:
        raise ConfigError("conversations: at least one is needed to train a tokenizer and a model")
    texts = [render(c) for c in conversations]
    tokenizer = train_tokenizer([*texts, *corpus], config.vocab_size)
    rows, masks = [], []
    for conversation in conversations:
        ids, mask = _tokenize_with_answer_mask(tokenizer, conversation)
        if len(ids) > config.max_length:
            raise ConfigError(f"a conversation is {len(ids)} tokens, above max_length {config.max_length}")
        rows.append(ids)
        masks.append(mask)
    width = max(len(r) for r in rows)
    pad = tokenizer.pad_token_id
    input_ids = torch.tensor([r + [pad] * (width - len(r)) for r in rows])
    attention = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
    labels = input_ids.clone()
    labels[torch.tensor([m + [False] * (width - len(m)) for m in masks]).logical_not()] = -100
    torch.manual_seed(config.seed)
    model = LlamaForCausalLM(LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=config.hidden_size, intermediate_size=2 * config.hidden_size,
        num_hidden_layers=config.layers, num_attention_heads=config.heads, num_key_value_heads=config.heads,
        max_position_embeddings=config.max_length, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=pad, tie_word_embeddings=True))
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr)
    model.train()
    for _ in range(config.steps):
        loss = model(input_ids=input_ids, attention_mask=attention, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    model.generation_config = GenerationConfig(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                                               pad_token_id=pad, max_new_tokens=config.max_length)
    out = Path(out_dir)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return out


def _tokenize_with_answer_mask(tokenizer: Any, conversation: Sequence[dict[str, str]]) -> tuple[list[int], list[bool]]:
    """Token ids of the rendered conversation and, per token, whether it belongs to an assistant answer.

    Each message is tokenized on its own (role tags and ``</s>`` are special tokens, so the pieces join
    at clean token boundaries, as TRL expects) and the answer's closing ``</s>`` is part of the answer.
    """
    ids = [tokenizer.bos_token_id]
    mask = [False]
    for message in conversation:
        role = tokenizer.convert_tokens_to_ids(f"<|{message['role']}|>")
        if role == tokenizer.unk_token_id or role is None:
            raise ConfigError(f"role: {message['role']!r} is not one of system, user, assistant, tool")
        content = tokenizer(message["content"], add_special_tokens=False)["input_ids"]
        answer = message["role"] == "assistant"
        piece = [role, *content] + ([tokenizer.eos_token_id] if answer else [])
        ids += piece
        mask += [False] + [answer] * (len(piece) - 1)
    return ids, mask
