"""A built-in support-ticket triage task: one tool (``route``), a task suite, graders and a tiny agent for it.

The reference agent task for tests, benchmarks and demos: a ticket is routed to ``billing``, ``accounts``
or ``technical`` by calling ``route(queue)``. :func:`build_triage_agent` trains a tiny model locally
(:mod:`rlops_plugin.kinds.agent.tiny_model`) and returns a complete agent bundle.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rlops_plugin.bundle.bundle import PolicyBundle
from rlops_plugin.bundle.references import reference_of
from rlops_plugin.kinds.agent import graders as builtin_graders
from rlops_plugin.kinds.agent.create import agent_bundle
from rlops_plugin.kinds.agent.specs import GraderSpec, TaskEnvSpec
from rlops_plugin.kinds.agent.tiny_model import TinyModelConfig, build_tiny_model

QUEUES = {"invoice": "billing", "refund": "billing", "password": "accounts", "login": "accounts",
          "crash": "technical", "error": "technical"}
TEMPLATES = ("my {} is wrong", "help with {}", "{} problem today")
HELD_OUT_TEMPLATES = ("urgent: {} issue",)
ROUTE_TOOL = {"type": "function", "function": {
    "name": "route", "description": "Send the ticket to a support queue.",
    "parameters": {"type": "object", "properties": {"queue": {"type": "string",
                                                                "enum": sorted(set(QUEUES.values()))}},
                   "required": ["queue"], "additionalProperties": False}}}
TOOLS = [ROUTE_TOOL]


def route(queue: str) -> dict[str, Any]:
    """The ``route`` tool's implementation: accept a known queue."""
    if queue not in set(QUEUES.values()):
        return {"ok": False, "error": f"unknown queue {queue!r}"}
    return {"ok": True, "queue": queue}


def call_text(queue: str) -> str:
    """The assistant's tool call for ``queue`` in the ``json`` tool-call format."""
    return json.dumps({"name": "route", "arguments": {"queue": queue}})


def tickets(templates: tuple[str, ...] = TEMPLATES) -> list[tuple[str, str]]:
    """``(ticket text, correct queue)`` for every keyword and template."""
    return [(template.format(word), queue) for word, queue in QUEUES.items() for template in templates]


def conversations(templates: tuple[str, ...] = TEMPLATES) -> list[list[dict[str, str]]]:
    """Training conversations: each ticket answered by the right ``route`` call."""
    return [[{"role": "user", "content": text}, {"role": "assistant", "content": call_text(queue)}]
            for text, queue in tickets(templates)]


def task_env() -> TaskEnvSpec:
    """The environment part: the ``route`` tool and a task suite with the expected calls."""
    tasks = [{"id": f"ticket-{i}", "messages": [{"role": "user", "content": text}],
              "expected": {"tool_calls": [{"name": "route", "arguments": {"queue": queue}}]}}
             for i, (text, queue) in enumerate(tickets(TEMPLATES + HELD_OUT_TEMPLATES))]
    return TaskEnvSpec(name="ticket-triage", tools=({"name": "route", "ref": reference_of(route)},), tasks=tuple(tasks))


def grader_spec() -> GraderSpec:
    """The reward part: the expected call (weight 1) and a call valid for the tool's schema (gate)."""
    return GraderSpec(graders=(
        {"name": "expected_call", "ref": reference_of(builtin_graders.expected_tool_call)},
        {"name": "valid_call", "ref": reference_of(builtin_graders.valid_tool_call), "weight": 0.0},
    ))


def build_triage_agent(out_dir: str | Path, config: TinyModelConfig | None = None,
                       system_prompt: str | None = None) -> PolicyBundle:
    """Train the tiny triage model into ``out_dir`` and return its agent bundle (nothing downloaded)."""
    checkpoint = build_tiny_model(conversations(), out_dir, config)
    return agent_bundle(checkpoint, task_env(), grader_spec(), tools=TOOLS, system_prompt=system_prompt,
                        generation={"max_new_tokens": 40, "temperature": 1.0, "top_p": 1.0})
