"""What the demo does and how big each stage is: one preset for the README, one for CI (``--fast``).

Every number here is a budget (training steps, decisions of traffic, episodes of evaluation);
the stages and the code paths are the same in both presets.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any


@dataclass
class DemoConfig:
    """Budgets and knobs of one demo run."""

    model_name: str = "cartpole-demo"
    """Registered model name (a suffix is added when the server already has it)."""
    env_id: str = "CartPole-v1"
    """The production world: a gymnasium id of a Discrete-action environment."""
    shift: dict[str, Any] = field(default_factory=lambda: {"masscart": 2.5})
    """How the world changes halfway: env attribute overrides (CartPole's cart weighs 1.0; a cart
    2.5x as heavy showed in the observations of every champion tried, a 1.5x longer pole did not)."""
    seed: int = 0
    champion_steps: int = 32_768
    """Simulator (PPO) steps of the initial champion: small on purpose, it leaves room to improve."""
    epsilon: float = 0.1
    """Exploration of the deployed policy (epsilon-greedy; logged propensities make OPE possible)."""
    reference_decisions: int = 10_000
    """Decisions of nominal traffic the monitor uses as its reference."""
    nominal_decisions: int = 3_000
    """More nominal traffic after the reference (windows that must not alarm)."""
    shifted_decisions: int = 6_000
    """Traffic after the world changed."""
    feedback_delay: int = 5
    """Rewards reach the feedback endpoint this many batches after their decision."""
    n_envs: int = 16
    """Concurrent simulated episodes (users) of the traffic."""
    window: int = 1000
    """Decisions per monitoring window."""
    trigger: str = "drift:observations:2"
    """Retraining trigger rule of the monitor."""
    cql_steps: int = 4000
    """Offline RL (CQL) gradient steps on the logged decisions."""
    finetune_steps: int = 98_304
    """Guarded simulator fine-tuning steps after CQL (0 skips it)."""
    calibration: dict[str, Any] = field(default_factory=lambda: {
        "masscart": {"low": 0.25, "high": 10.0}, "length": {"low": 0.1, "high": 2.5}})
    """Physics the operator declares may drift, with plausible ranges (the champion's EnvSpec
    ``calibration``). The pipeline fits them to the newest logged transitions and fine-tunes around
    the fit: the demo is never told what changed, as a real user is not."""
    calibration_window: int = 1000
    """Newest logged transitions the calibration fits (one monitoring window)."""
    finetune_config: dict[str, Any] = field(default_factory=lambda: {
        "lr": 1e-3, "anneal_lr": True, "update_epochs": 10, "minibatch_size": 128, "rollout_steps": 256,
        "constraint_suite": "cartpole-safety", "constraint_margin": 0.5, "constraint_penalty": 0.5,
        "edge_share": 0.25, "select_every": 4, "max_rounds": 3})
    """PPO settings of the fine-tuning: more epochs on smaller minibatches than the trainer's defaults
    (a return of 500 in 65k steps) and a decaying learning rate; the gate's safety suite as training
    costs, at its limits and again with a 50% margin inside them, each 0.5 per step (below the +1 a
    step earns, so falling is never the cheaper way out of the edge); every scenario of the suite as
    episode starts, and a quarter of the nominal episodes started near the cart's limits; the
    iterate chosen on the suite's validation seeds and a second round from it. Why: the champions
    drift the cart and fail the gate's ``cart_near_center`` (|x| <= 2.2 in every step of 50 episodes)
    themselves; measured from the CQL step of five real demo runs over 4 seeds each, fine-tuning
    passed the gate in 41 of 44 runs with penalty 0.5, edge starts and the 50% margin, and in 19 of
    20 with the real limits costed as well (these settings, 2 rounds); with the 25% margin and penalty 5, 2 of
    5 real demos closed (README, "The demo closes the loop"). A third round: on a machine whose float kernels
    differ, the fast preset's seed 0 still failed the margin after two rounds (4 scenarios on the validation
    seeds) and then the gate's ``shoved_start`` (19 steps past 2.2); with three it closed."""
    eval_episodes: int = 30
    """Episodes of the training evaluation and of the gate's paired comparison."""
    regression_margin: float = 0.05
    """The gate fails a candidate shown worse than the champion by more than this fraction."""
    promotion: dict[str, Any] = field(default_factory=lambda: {
        "steps": [0.1, 0.5], "shadow_decisions": 500, "min_decisions_per_step": 1000, "min_samples": 30,
        "metric": "episode", "poll_interval_s": 1.0, "max_duration_s": 300.0})
    """PromotionPolicy of the canary (episode returns: CartPole pays +1 per step whatever the policy)."""
    final_eval_episodes: int = 50
    """Episodes comparing the initial and the final champion at the end."""

    @classmethod
    def preset(cls, fast: bool = False, **overrides: Any) -> DemoConfig:
        """The README preset, or the CI one (``fast``: under 3 minutes on 2 cores)."""
        values: dict[str, Any] = {}
        if fast:
            values = {"champion_steps": 16_384, "reference_decisions": 5_000, "nominal_decisions": 1_000,
                      "shifted_decisions": 2_500, "window": 500, "calibration_window": 500, "cql_steps": 1500,
                      "finetune_steps": 65_536,
                      "eval_episodes": 10, "final_eval_episodes": 20,
                      "promotion": {"steps": [0.5], "shadow_decisions": 200, "min_decisions_per_step": 300,
                                    "min_samples": 15, "metric": "episode", "poll_interval_s": 1.0,
                                    "max_duration_s": 120.0}}
        values.update(overrides)
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """JSON form (saved next to the report)."""
        return dataclasses.asdict(self)


AGENT_TRACE_EXPERIMENT = "rlops-agent-triage-demo"
"""MLflow experiment of the agent demo's traces (one trace per interaction the server answered)."""


@dataclass
class AgentDemoConfig:
    """Budgets and knobs of one ``rlops demo agent`` run (a support-ticket triage agent)."""

    model_name: str = "triage-demo"
    """Registered model name (a suffix is added when the server already has it)."""
    seed: int = 0
    """Seed of the tiny model's initialization and of the simulated tickets and reviews."""
    model_steps: int = 600
    """Training steps of the initial tiny model (600 recalls all 18 first-world training tickets, seeds 0-4)."""
    reference_tickets: int = 1200
    """Tickets of the first world the monitor uses as its reference (the champion's first production window;
    at least ``min_calibration_windows`` = 10 windows, so the thresholds are calibrated on it: with 2 windows a
    nominal window's prompt lengths crossed the configured Jensen-Shannon threshold)."""
    nominal_tickets: int = 200
    """More first-world tickets after the reference (windows that must not alarm)."""
    shifted_tickets: int = 300
    """Tickets after the support organisation changed (``QUEUES_V2``), before the monitor runs."""
    window: int = 100
    """Interactions per monitoring window."""
    trigger: str = "drift:ratings:2"
    """Retraining trigger rule (two windows in a row whose ratings drifted)."""
    correct_share: float = 0.5
    """Share of wrong answers the reviewer also corrects with the call the hidden rule expects."""
    temperature: float = 1.0
    """Sampling temperature of the simulated clients' requests (logged with each answer)."""
    trainer: str = "sft"
    """Agent trainer of the cycle (``sft``: approved answers and corrections; ``dpo``, ``kto``)."""
    trainer_config: dict[str, Any] = field(default_factory=lambda: {"steps": 400, "lr": 1e-3, "batch_size": 8})
    """Settings of the trainer. The dataset is small (each distinct reviewed ticket once, about 30 rows), so
    the update needs more passes than the 160-step default: on one demo's dataset 120 steps reached 62% of
    the new world's suite, 300 steps 85%, 600 steps 88% (red team 8/8 each)."""
    regression_margin: float = 0.05
    """The gate fails a candidate shown worse than the champion, on the new task suite, by more than this."""
    promotion: dict[str, Any] = field(default_factory=lambda: {
        "steps": [0.5], "shadow_decisions": 40, "min_decisions_per_step": 60, "min_samples": 20,
        "approve_before_canary": True, "poll_interval_s": 1.0, "max_duration_s": 600.0})
    """PromotionPolicy of the canary: per-answer ratings; a person approves between shadow and canary."""
    live_batch: int = 8
    """Tickets per batch of the production traffic that keeps coming while the pipeline runs."""
    live_pause_s: float = 0.5
    """Pause between those batches."""

    @classmethod
    def preset(cls, fast: bool = False, **overrides: Any) -> AgentDemoConfig:
        """The README preset, or the CI one (``fast``)."""
        values: dict[str, Any] = {}
        if fast:
            values = {"reference_tickets": 1100, "nominal_tickets": 100, "shifted_tickets": 200,
                      "promotion": {"steps": [0.5], "shadow_decisions": 30, "min_decisions_per_step": 40,
                                    "min_samples": 15, "approve_before_canary": True, "poll_interval_s": 1.0,
                                    "max_duration_s": 300.0}}
        values.update(overrides)
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """JSON form (saved next to the report)."""
        return dataclasses.asdict(self)
