"""Guarded fine-tuning in the simulator: PPO from the deployed policy, with serving's guards.

Episodes run in the bundle's EnvSpec (domain randomization included, optionally widened for
training) and are scored by the bundle's RewardSpec. Actions are drawn from the same guarded
distribution the server would execute: the policy mixed with a bounded epsilon, restricted by
an ``action_mask`` the env may put in ``info``, and passed through ``rlops_shield`` plugins. The
PPO surrogate uses the ratio ``pi_theta / pi_old`` and weights advantages by the truncated
importance weight ``min(1, pi_old / mu)`` (V-trace style) to correct for sampling from ``mu``.
With ``constraint_suite`` the suite's constraints cost ``constraint_penalty`` per violating step in
the training reward only (a fixed-penalty form of constrained RL), so the update learns to pass the
gate's safety scenarios rather than merely the return.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from rlops_plugin.bundle.bundle import PolicyBundle
from rlops_plugin.bundle.policy import sample_categorical
from rlops_plugin.errors import ConfigError
from rlops_plugin.experience.dataset import Dataset
from rlops_plugin.local.threads import torch_threads
from rlops_plugin.serving.guards import shield_active, shield_discrete
from rlops_plugin.simulation.rollouts import current_obs
from rlops_plugin.training import distributed
from rlops_plugin.training.base import Progress, Trainer, TrainingRun, TrainResult


@dataclass
class PPOConfig:
    """Guarded PPO fine-tuning settings."""

    total_steps: int = 20000
    """Environment steps (summed over parallel envs)."""
    n_envs: int = 8
    """Parallel environments."""
    rollout_steps: int = 128
    """Steps per env between updates."""
    update_epochs: int = 4
    """Passes over each rollout."""
    minibatch_size: int = 256
    """Samples per gradient step."""
    lr: float = 3e-4
    """Adam learning rate (actor and critic)."""
    anneal_lr: bool = False
    """Decay the learning rate linearly to zero over the run (as CleanRL does): the last updates
    move the policy less, so the final iterate is steadier."""
    gamma: float = 0.99
    """Discount factor."""
    gae_lambda: float = 0.95
    """GAE lambda."""
    clip_coef: float = 0.2
    """PPO ratio clipping."""
    ent_coef: float = 0.0
    """Entropy bonus."""
    vf_coef: float = 0.5
    """Value loss weight."""
    max_grad_norm: float = 0.5
    """Gradient clipping norm."""
    epsilon: float = 0.02
    """Exploration mixed into the policy, like serving's epsilon (bounded by max_epsilon)."""
    max_epsilon: float = 0.2
    """Guard: the largest epsilon accepted."""
    use_shield: bool = True
    """Apply rlops_shield plugins during training, as the server does."""
    extra_randomization: dict[str, Any] = field(default_factory=dict)
    """Domain-randomization ranges added to the EnvSpec's for training only (same format)."""
    constraint_suite: str = ""
    """Scenario suite (registered name or JSON file) whose suite-wide constraints cost during training,
    so the policy learns to respect what the gate's ``scenarios`` check counts. Empty: no costs."""
    constraint_penalty: float = 5.0
    """Training-reward penalty per violating step (the RewardSpec and the reported returns are unchanged).
    For an observation bound keep it below the reward a step earns: a larger one makes every step
    in the violating region a net loss, and ending the episode (the pole falling) the cheapest way
    out, which teaches the opposite of recovering (measured on CartPole: 5.0 left cart drift the
    update could not remove; 0.5 removed it)."""
    constraint_margin: float = 0.0
    """With ``constraint_suite``: each constraint also costs tightened by this margin
    (:meth:`~rlops_plugin.simulation.scenarios.Constraint.tightened`; 0.5 makes CartPole's
    ``|x| <= 2.2`` cost from ``|x| > 1.1``, and twice beyond 2.2), so the policy keeps clear of the
    limits the gate checks instead of grazing them: a policy that only just respects a bound in
    training crosses it under another seed, or on another machine's float arithmetic."""
    scenario_share: float = 0.5
    """With ``constraint_suite``: share of the parallel envs that run the suite's scenarios (their env
    overrides, adversarial initial states and observation noise; each env moves on to another
    scenario after every episode, so all are trained on however few envs there are) instead of the
    nominal EnvSpec, so the update sees the situations the gate will test."""
    select_every: int = 0
    """With ``constraint_suite``: every this many updates (and after the last) run the suite, with
    twice its episodes, on validation seeds (offset from the suite's own, which the gate uses) and
    return the iterate with the fewest failed scenarios, then the fewest failed at the limits
    tightened by ``constraint_margin``, then the highest mean return (PPO iterates differ in safety
    from one update to the next). 0 returns the last iterate."""
    edge_share: float = 0.0
    """With ``constraint_suite``: share of the nominal envs' episodes that start near one of the
    suite's observation bounds (a uniform point between the limit tightened by
    ``constraint_margin`` (25% when it is 0) and the limit itself, on a random side), so the policy
    learns to come back from the edge, a state it otherwise meets only at the end of long episodes.
    Needs the env's ``unwrapped.state`` to be its observation (as for scenario initial states)."""
    max_rounds: int = 1
    """With ``select_every``: when the selected iterate still fails a scenario on the validation
    seeds (with ``constraint_margin``: at the tightened limits), train another round of
    ``total_steps`` from it (learning rate schedule restarted), up to this many rounds in all: the
    budget is ``max_rounds * total_steps`` steps. The gate's own seeds are never looked at, so the
    gate stays an independent test."""
    value_hidden_sizes: list[int] = field(default_factory=lambda: [64, 64])
    """Hidden layers of the critic (trained from scratch)."""
    seed: int = 0
    """Seed of env resets, sampling and the critic's initialisation."""
    torch_threads: int = 1
    """torch threads; one is fastest for small networks."""


class PPOTrainer(Trainer):
    """Fine-tune the deployed policy in its simulator, safely."""

    logged_metrics: ClassVar[tuple[str, ...]] = ("train/policy_loss", "train/value_loss", "train/entropy",
                                                  "train/approx_kl", "train/clip_fraction", "train/episodic_return",
                                                  "train/vetoes")
    """What the trainer reports while training (the metrics a search space may prune on)."""

    Config = PPOConfig
    data_kind = "simulator"
    description = "guarded PPO fine-tuning in the EnvSpec simulator with domain randomization"

    def train(self, init: PolicyBundle, data: Dataset | None, config: PPOConfig,
              progress: Progress | None = None) -> TrainResult:
        """Collect guarded rollouts and apply PPO updates (rounds and iterate selection as configured).

        Under torchrun each rank steps ``n_envs / world`` of the envs (their reset seeds offset by rank, so the
        ranks' episodes differ and the total per update is unchanged) and samples with a ``(seed, rank)``
        generator; advantages are normalised over all ranks' rollouts, mini-batches of
        ``ceil(minibatch_size / world)`` rows per rank have their gradients averaged, and every rank ends with
        the same weights (checked).
        """
        self.check(init, config)
        dist = distributed.init()
        if config.n_envs % dist.world_size:
            raise ConfigError(f"sim_finetune: n_envs ({config.n_envs}) must be a multiple of the {dist.world_size} "
                              "processes, so every rank steps the same number of envs")
        updates = max(1, config.total_steps // (config.n_envs * config.rollout_steps))
        per_update = config.n_envs * config.rollout_steps
        run = TrainingRun.start(config.seed, updates * per_update * config.max_rounds, progress, every=1)
        rng = run.rng
        if dist.distributed:
            rng = distributed.rank_rng(config.seed)
            config = dataclasses.replace(config, n_envs=config.n_envs // dist.world_size,
                                         minibatch_size=distributed.per_rank(config.minibatch_size, dist.world_size))
        spec = init.env_spec.replace(randomization=config.extra_randomization) if config.extra_randomization \
            else init.env_spec
        policy = init.policy.clone()
        policy.train()
        critic = _mlp(policy.obs_dim, config.value_hidden_sizes)
        params = list(policy.network.parameters()) + list(critic.parameters())
        distributed.broadcast_state([policy.network, critic])
        opt = torch.optim.Adam(params, lr=config.lr)
        runner = _Runner(spec, init, config, rng, dist.rank)
        selector = _Selector(init, config) if config.select_every else None
        rounds = 0
        try:
            with torch_threads(config.torch_threads):
                for rounds in range(1, config.max_rounds + 1):
                    done = (rounds - 1) * updates
                    for update in range(1, updates + 1):
                        if config.anneal_lr:
                            for group in opt.param_groups:
                                group["lr"] = config.lr * (1.0 - (update - 1) / updates)
                        batch = runner.collect(policy, critic)
                        metrics = _ppo_update(policy, critic, opt, params, batch, config, rng)
                        metrics.update(runner.stats())
                        if dist.distributed:
                            metrics = distributed.reduce_metrics(metrics, sums=_COUNTS)
                        if selector is not None and (update % config.select_every == 0 or update == updates):
                            selector.consider(policy, done + update)
                        run.record((done + update) * per_update, metrics)
                    if selector is None:
                        break
                    selected = selector.restore_best(policy)  # the next round starts from the best iterate
                    if selected["train/selection_failed_with_margin"] == 0:
                        break
        finally:
            runner.close()
        distributed.check_in_sync([policy.network, critic], "PPO networks")
        if selector is not None:
            run.metrics.update(selector.restore_best(policy))
            run.metrics["train/rounds"] = float(rounds)
        return run.result(policy)

    def check(self, init: PolicyBundle, config: PPOConfig) -> None:
        """Refuse non-Discrete policies and inconsistent guard, constraint and selection settings."""
        if not init.policy.discrete:
            raise ConfigError("sim_finetune supports Discrete action spaces")
        if not 0.0 <= config.epsilon <= config.max_epsilon <= 1.0:
            raise ConfigError(f"epsilon {config.epsilon} must lie in [0, max_epsilon={config.max_epsilon}]")
        if config.constraint_penalty < 0:
            raise ConfigError(f"constraint_penalty must be >= 0, got {config.constraint_penalty}")
        if not 0.0 <= config.scenario_share <= 1.0:
            raise ConfigError(f"scenario_share must lie in [0, 1], got {config.scenario_share}")
        if config.select_every < 0 or (config.select_every and not config.constraint_suite):
            raise ConfigError("select_every must be >= 0 and needs a constraint_suite to select by")
        if not 0.0 <= config.edge_share <= 1.0:
            raise ConfigError(f"edge_share must lie in [0, 1], got {config.edge_share}")
        if config.max_rounds < 1 or (config.max_rounds > 1 and not config.select_every):
            raise ConfigError("max_rounds must be >= 1; more than one round needs select_every to judge a round by")


_COUNTS = ("train/vetoes", "train/constraint_violations")
"""Metrics that count events: summed over ranks (the others are averaged)."""
RANK_SEED_STRIDE = 10_000_019
"""Offset between ranks' env reset seeds (a run resets far fewer envs than this: ranks never share a seed)."""


def _rank_seed(seed: list[int], rank: int) -> list[int]:
    """A generator seed distinct per rank; rank 0's is the single-process one (results stay bit-identical)."""
    return seed if rank == 0 else [*seed, rank]


def _mlp(in_dim: int, hidden: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    last = in_dim
    for width in hidden:
        layers += [nn.Linear(last, width), nn.Tanh()]
        last = width
    layers.append(nn.Linear(last, 1))
    return nn.Sequential(*layers)


class _Selector:
    """Keeps the iterate that does best on the constraint suite's scenarios, on validation seeds.

    With ``constraint_margin`` each constraint is also checked tightened by the margin (in the same
    rollouts): an iterate that passes only at the real limits is fragile (another seed, or another
    machine's arithmetic, tips it over), so the score is (scenarios failed at the real limits,
    scenarios failed with the margin, mean return), and a round counts as done only when nothing
    fails with the margin.
    """

    SEED_OFFSET = 7_919
    MARGIN_SUFFIX = "+margin"

    def __init__(self, init: PolicyBundle, config: PPOConfig) -> None:
        import dataclasses

        from rlops_plugin.simulation.scenarios import ScenarioSuite

        suite = ScenarioSuite.load(config.constraint_suite)
        offset = self.SEED_OFFSET + config.seed
        margin = config.constraint_margin

        def with_margin(constraints: tuple[Any, ...]) -> tuple[Any, ...]:
            if not margin:
                return constraints
            return (*constraints, *(dataclasses.replace(c.tightened(margin), name=c.name + self.MARGIN_SUFFIX)
                                    for c in constraints))

        self.suite = dataclasses.replace(suite, constraints=with_margin(suite.constraints), scenarios=tuple(
            dataclasses.replace(sc, seed=sc.seed + offset, constraints=with_margin(sc.constraints))
            for sc in suite.scenarios))
        self.init = init
        self.best: tuple[int, int, float] | None = None
        self.best_state: dict[str, torch.Tensor] | None = None
        self.best_update = 0

    def consider(self, policy: Any, update: int) -> None:
        from rlops_plugin.simulation.scenarios import run_suite

        policy.eval()
        try:
            results = run_suite(policy, self.init.env_spec, self.suite, self.init.reward_spec, episodes_scale=2.0)
        finally:
            policy.train()
        real = sum(any(not f.split(":")[0].endswith(self.MARGIN_SUFFIX) for f in r.failures) for r in results)
        score = (-real, -sum(not r.passed for r in results), float(np.mean([r.report.returns.mean() for r in results])))
        if self.best is None or score >= self.best:  # ties go to the later iterate
            self.best, self.best_update = score, update
            self.best_state = {k: v.detach().clone() for k, v in policy.network.state_dict().items()}

    def restore_best(self, policy: Any) -> dict[str, float]:
        assert self.best is not None and self.best_state is not None
        policy.network.load_state_dict(self.best_state)
        return {"train/selected_update": float(self.best_update),
                "train/selection_failed_scenarios": float(-self.best[0]),
                "train/selection_failed_with_margin": float(-self.best[1]),
                "train/selection_return_mean": self.best[2]}


def _constraint_costs(suite_ref: str, init: PolicyBundle, margin: float = 0.0
                      ) -> tuple[list[Any], list[Any], list[Any]]:
    """Per-step cost functions of the suite's suite-wide constraints (at their limits and, with a
    ``margin``, again tightened by it), its scenarios, and the constraints themselves (validated
    against the bundle: unknown env parameters, indices or actions fail before training starts)."""
    if not suite_ref:
        return [], [], []
    from rlops_plugin.simulation.scenarios import ScenarioSuite

    suite = ScenarioSuite.load(suite_ref)
    suite.validate_for(init.env_spec, init.policy)
    if not suite.constraints:
        raise ConfigError(f"constraint_suite {suite_ref!r} has no suite-wide constraints to train against")
    costs = [c.cost_fn() for c in suite.constraints]
    if margin:  # the margin adds an earlier cost; crossing the real limit costs again on top of it
        costs += [c.tightened(margin).cost_fn() for c in suite.constraints]
    return costs, list(suite.scenarios), list(suite.constraints)


def _edge_region(constraint: Any, margin: float) -> list[tuple[int, float, float]]:
    """``(index, from, to)`` start intervals between the tightened and the real observation bound."""
    tight = constraint.tightened(margin or 0.25)
    out = []
    if constraint.high is not None:
        out.append((int(constraint.index), float(tight.high), float(constraint.high)))
    if constraint.low is not None:
        out.append((int(constraint.index), float(constraint.low), float(tight.low)))
    return out


def _placement(scenario: Any) -> Any:
    """The scenario's adversarial initial-state setter, or None."""
    from rlops_plugin.simulation.scenarios import initial_state_setter

    return initial_state_setter(scenario.initial_state) if scenario.initial_state else None


class _Runner:
    """Steps the envs with the guarded behaviour distribution and records a rollout."""

    def __init__(self, spec: Any, init: PolicyBundle, config: PPOConfig, rng: np.random.Generator,
                 rank: int = 0) -> None:
        self.config = config
        self.rng = rng
        self.reward_spec = init.reward_spec if init.reward_spec.ref != "env" else None
        self.costs, scenarios, constraints = _constraint_costs(config.constraint_suite, init, config.constraint_margin)
        self.edges = [region for c in constraints if c.type == "observation_bound"
                      for region in _edge_region(c, config.constraint_margin)] if config.edge_share else []
        self.edge_rng = np.random.default_rng(_rank_seed([config.seed, 0xED6E], rank))
        self.spec, self.scenarios = spec, scenarios
        self.n_scenario = round(config.n_envs * config.scenario_share) if scenarios else 0
        # env i < n_scenario runs scenario i first, then every n_scenario-th next one after each episode
        # (so each scenario is trained on, however few envs there are); the others run ``spec``
        self.current: list[int | None] = [i % len(scenarios) if i < self.n_scenario else None
                                          for i in range(config.n_envs)]
        self.layout = [self._slot(k) for k in self.current]
        self.envs = [env_spec.make() for env_spec, _, _ in self.layout]
        self.noise_rng = np.random.default_rng(_rank_seed([config.seed, 0x0B5], rank))
        self.next_seed = config.seed * 100_003 + rank * RANK_SEED_STRIDE
        self.obs = np.stack([self._reset(i)[0] for i in range(len(self.envs))]).astype(np.float32)
        self.masks = np.ones((config.n_envs, init.policy.n_actions), dtype=bool)
        self.episode_returns = np.zeros(config.n_envs)
        self.completed: list[float] = []
        self.vetoes = 0
        self.violations = 0
        self.use_shield = config.use_shield and shield_active()

    def _slot(self, scenario: int | None) -> tuple[Any, Any, float]:
        """(env spec, initial-state setter or None, observation noise) of a scenario, or of the nominal spec."""
        if scenario is None:
            return self.spec, None, 0.0
        sc = self.scenarios[scenario]
        return sc.env_spec(self.spec), _placement(sc), float(sc.perturbations.get("observation_noise", 0.0))

    def _next_scenario(self, i: int) -> None:
        """Move env ``i`` on to its next scenario (rebuilt when the env parameters differ)."""
        k = self.current[i]
        if k is None or len(self.scenarios) <= self.n_scenario:
            return
        self.current[i] = (k + self.n_scenario) % len(self.scenarios)
        spec = self.layout[i][0]
        self.layout[i] = self._slot(self.current[i])
        if self.layout[i][0] != spec:
            self.envs[i].close()
            self.envs[i] = self.layout[i][0].make()

    def seen(self, obs: np.ndarray) -> np.ndarray:
        """What the policy observes: the scenarios' sensor noise added, as the gate's rollouts add it."""
        std = np.array([noise for _, _, noise in self.layout], dtype=np.float32)
        if not std.any():
            return obs
        return obs + (self.noise_rng.normal(size=obs.shape) * std[:, None]).astype(np.float32)

    def _reset(self, i: int) -> tuple[np.ndarray, dict]:
        self.next_seed += 1
        env, place = self.envs[i], self.layout[i][1]
        obs, info = env.reset(seed=self.next_seed)
        if place is not None:
            place(env, self.next_seed)
            obs = current_obs(env, obs)
        elif self.edges and self.edge_rng.random() < self.config.edge_share:
            index, low, high = self.edges[int(self.edge_rng.integers(len(self.edges)))]
            base = env.unwrapped
            if not hasattr(base, "state"):
                raise ConfigError(f"edge_share: {type(base).__name__} has no 'state' to start near a bound from")
            state = np.array(base.state, dtype=np.float64)
            state[index] = self.edge_rng.uniform(low, high)
            base.state = state.astype(np.asarray(base.state).dtype)
            obs = current_obs(env, obs)
        return obs, info

    def collect(self, policy: Any, critic: nn.Module) -> dict[str, torch.Tensor]:
        cfg = self.config
        n = cfg.n_envs
        obs_buf = np.zeros((cfg.rollout_steps, n, policy.obs_dim), dtype=np.float32)
        act_buf = np.zeros((cfg.rollout_steps, n), dtype=np.int64)
        logp_buf = np.zeros((cfg.rollout_steps, n), dtype=np.float32)
        mu_buf = np.zeros((cfg.rollout_steps, n), dtype=np.float32)
        rew_buf = np.zeros((cfg.rollout_steps, n), dtype=np.float32)
        done_buf = np.zeros((cfg.rollout_steps, n), dtype=np.float32)
        val_buf = np.zeros((cfg.rollout_steps + 1, n), dtype=np.float32)
        for t in range(cfg.rollout_steps):
            seen = self.seen(self.obs)
            with torch.no_grad():
                obs_t = torch.from_numpy(seen)
                pi = torch.softmax(policy.network(obs_t), dim=-1).numpy().astype(np.float64)
                val_buf[t] = critic(obs_t).squeeze(-1).numpy()
            allowed = self.masks
            mu = (1.0 - cfg.epsilon) * pi * allowed + cfg.epsilon * allowed / allowed.sum(1, keepdims=True)
            mu = mu / mu.sum(axis=1, keepdims=True)
            proposed = sample_categorical(mu, self.rng)
            executed = proposed.copy()
            effective = mu
            if self.use_shield:
                effective, vetoes = shield_discrete(seen, mu, [{"model": "training", "policy_version": "training",
                                                                    "request": {}}] * n)
                for i, a in enumerate(proposed):
                    if int(a) in vetoes[i]:
                        executed[i] = int(vetoes[i][int(a)].action)
                        self.vetoes += 1
            obs_buf[t], act_buf[t] = seen, executed
            logp_buf[t] = np.log(pi[np.arange(n), executed] + 1e-12)
            mu_buf[t] = effective[np.arange(n), executed]
            for i, env in enumerate(self.envs):
                next_obs, reward, terminated, truncated, info = env.step(int(executed[i]))
                if self.reward_spec is not None:
                    reward = self.reward_spec(obs=self.obs[i], action=int(executed[i]), next_obs=next_obs,
                                              env_reward=reward, terminated=terminated, truncated=truncated,
                                              outcome=None)
                self.episode_returns[i] += reward
                if self.costs:
                    violated = sum(cost(self.obs[i], int(executed[i]), next_obs, info) for cost in self.costs)
                    self.violations += int(violated > 0)
                    reward -= cfg.constraint_penalty * violated
                if truncated and not terminated:  # bootstrap through the time limit
                    with torch.no_grad():
                        reward += cfg.gamma * float(critic(torch.as_tensor(next_obs[None], dtype=torch.float32)))
                rew_buf[t, i] = reward
                done_buf[t, i] = float(terminated or truncated)
                if terminated or truncated:
                    self.completed.append(float(self.episode_returns[i]))
                    self.episode_returns[i] = 0.0
                    self._next_scenario(i)
                    next_obs, info = self._reset(i)
                mask = info.get("action_mask") if isinstance(info, dict) else None
                self.masks[i] = np.asarray(mask, dtype=bool) if mask is not None else True
                self.obs[i] = next_obs
        with torch.no_grad():
            val_buf[-1] = critic(torch.from_numpy(self.seen(self.obs))).squeeze(-1).numpy()
        adv = np.zeros_like(rew_buf)
        last = np.zeros(n, dtype=np.float32)
        for t in reversed(range(cfg.rollout_steps)):
            nonterminal = 1.0 - done_buf[t]
            delta = rew_buf[t] + cfg.gamma * val_buf[t + 1] * nonterminal - val_buf[t]
            last = delta + cfg.gamma * cfg.gae_lambda * nonterminal * last
            adv[t] = last
        returns = adv + val_buf[:-1]
        rho = np.minimum(1.0, np.exp(logp_buf) / np.maximum(mu_buf, 1e-12))
        flat = {"obs": obs_buf.reshape(-1, policy.obs_dim), "action": act_buf.reshape(-1),
                "logp": logp_buf.reshape(-1), "adv": (adv * rho).reshape(-1), "ret": returns.reshape(-1)}
        return {key: torch.as_tensor(value) for key, value in flat.items()}

    def stats(self) -> dict[str, float]:
        recent = self.completed[-20:]
        out = {"train/vetoes": float(self.vetoes)}
        if self.costs:
            out["train/constraint_violations"] = float(self.violations)
        if recent:
            out["train/episodic_return"] = float(np.mean(recent))
        return out

    def close(self) -> None:
        for env in self.envs:
            env.close()


def _ppo_update(policy: Any, critic: nn.Module, opt: torch.optim.Optimizer, params: list[torch.nn.Parameter],
                batch: dict[str, torch.Tensor], cfg: PPOConfig, rng: np.random.Generator) -> dict[str, float]:
    n = len(batch["action"])
    adv = batch["adv"]
    mean, std = distributed.global_mean_std(adv)
    adv = (adv - mean) / (std + 1e-8)
    stats: dict[str, float] = {}
    for _ in range(cfg.update_epochs):
        order = torch.from_numpy(rng.permutation(n))
        for start in range(0, n, cfg.minibatch_size):
            idx = order[start:start + cfg.minibatch_size]
            dist = policy.distribution(batch["obs"][idx])
            logp = dist.log_prob(batch["action"][idx])
            ratio = torch.exp(logp - batch["logp"][idx])
            a = adv[idx]
            pg = -torch.min(ratio * a, torch.clamp(ratio, 1 - cfg.clip_coef, 1 + cfg.clip_coef) * a).mean()
            value = critic(batch["obs"][idx]).squeeze(-1)
            vf = 0.5 * ((value - batch["ret"][idx]) ** 2).mean()
            entropy = dist.entropy().mean()
            loss = pg + cfg.vf_coef * vf - cfg.ent_coef * entropy
            opt.zero_grad()
            loss.backward()
            distributed.average_gradients(params)
            nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
            opt.step()
            with torch.no_grad():
                stats = {"train/policy_loss": pg.item(), "train/value_loss": vf.item(),
                         "train/entropy": entropy.item(),
                         "train/approx_kl": ((ratio - 1) - torch.log(ratio)).mean().item(),
                         "train/clip_fraction": ((ratio - 1).abs() > cfg.clip_coef).float().mean().item()}
    return stats
