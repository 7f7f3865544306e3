"""Built-in trainers: behaviour cloning, conservative Q-learning, guarded PPO, DPO; TRL updates for agents."""

from __future__ import annotations

from rlops_plugin.hookspecs import hookimpl


@hookimpl
def rlops_register_trainers(register) -> None:
    """Register the four built-in update paths (imported lazily: they need torch)."""
    from rlops_plugin.training.bc import BCTrainer
    from rlops_plugin.training.cql import CQLTrainer
    from rlops_plugin.training.dpo import DPOTrainer
    from rlops_plugin.training.ppo import PPOTrainer

    for name, cls in (("bc", BCTrainer), ("cql", CQLTrainer), ("sim_finetune", PPOTrainer), ("dpo", DPOTrainer)):
        register(name, cls, description=cls.description)
    from rlops_plugin.training.agent_trl import AgentDPOTrainer, AgentKTOTrainer, AgentSFTTrainer

    for name, cls in (("agent_sft", AgentSFTTrainer), ("agent_dpo", AgentDPOTrainer), ("agent_kto", AgentKTOTrainer)):
        register(name, cls, description=cls.description)
    from rlops_plugin.training.agent_grpo import AgentGRPOTrainer

    register("agent_grpo", AgentGRPOTrainer, description=AgentGRPOTrainer.description)
