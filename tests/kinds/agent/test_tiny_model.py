"""The local tiny-model builder: a tokenizer and a small Llama trained on the task's own text, no hub."""

from __future__ import annotations

import json

import pytest

from rlops_plugin.errors import ConfigError
from rlops_plugin.kinds.agent.tiny_model import TinyModelConfig, build_tiny_model, render

QUEUES = {"invoice": "billing", "refund": "billing", "password": "accounts", "login": "accounts",
          "crash": "technical", "error": "technical"}
TRIAGE = [[{"role": "user", "content": template.format(word)},
           {"role": "assistant", "content": json.dumps({"name": "route", "arguments": {"queue": queue}})}]
          for word, queue in QUEUES.items() for template in ("my {} is wrong", "help with {}", "{} problem today")]


@pytest.mark.slow
def test_the_model_learns_the_tool_call_format_and_loads_without_remote_code(tmp_path, monkeypatch):
    """Measured: 18/18 greedy answers reproduced for seeds 0-4 (600 steps); the test allows one miss."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # a download attempt would fail the test
    out = build_tiny_model(TRIAGE, tmp_path / "tiny", TinyModelConfig(seed=0))
    assert (out / "model.safetensors").is_file() and (out / "tokenizer.json").is_file()
    assert not list(out.glob("*.py")) and "auto_map" not in json.loads((out / "config.json").read_text())
    tokenizer = AutoTokenizer.from_pretrained(out, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(out, local_files_only=True, trust_remote_code=False)
    assert model.config.hidden_size <= 128
    right = 0
    for conversation in TRIAGE:
        prompt = tokenizer.apply_chat_template(conversation[:1], add_generation_prompt=True, tokenize=False)
        assert prompt == render(conversation[:1], add_generation_prompt=True)
        ids = tokenizer(prompt, add_special_tokens=False, return_tensors="pt")
        generated = model.generate(**ids, do_sample=False, max_new_tokens=40)
        answer = tokenizer.decode(generated[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)
        right += answer == conversation[1]["content"]
    assert right >= len(TRIAGE) - 1, f"{right}/{len(TRIAGE)} answers reproduced"


def test_bad_inputs_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="hidden_size: 8..128"):
        TinyModelConfig(hidden_size=256)
    with pytest.raises(ConfigError, match="conversations: at least one"):
        build_tiny_model([], tmp_path / "x")
    with pytest.raises(ConfigError, match="role: 'robot' is not one of"):
        build_tiny_model([[{"role": "robot", "content": "beep"}]], tmp_path / "x", TinyModelConfig(steps=1))
    with pytest.raises(ConfigError, match="above max_length 8"):
        build_tiny_model(TRIAGE[:1], tmp_path / "x", TinyModelConfig(steps=1, max_length=8))
