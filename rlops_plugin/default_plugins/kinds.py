"""Built-in policy kinds, registered through the same hook as a third party's."""

from __future__ import annotations

from rlops_plugin.hookspecs import hookimpl


@hookimpl
def rlops_register_policy_kinds(register) -> None:
    """``vector``: torch networks over flat observations; ``agent``: LLM agents with tools."""
    from rlops_plugin.kinds.agent.kind import AGENT
    from rlops_plugin.kinds.vector import VECTOR

    register("vector", VECTOR, description="torch network over flat float observations; Discrete or Box actions")
    register("agent", AGENT, description="Hugging Face causal LM (or LoRA adapter) with tools; OpenAI data plane")
