"""Hook specifications: every extension point of rlops, in one place.

Plugins implement these with ``@rlops_plugin.hookimpl`` and are found through the ``rlops``
entry-point group (or registered directly on the plugin manager). Built-ins in
``rlops_plugin.default_plugins`` use the very same hooks. Each ``rlops_register_*`` hook is
called once with a ``register`` callable; names must be unique across all plugins (a
duplicate raises ``PluginError`` naming both plugins). See docs/plugins.md.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pluggy

hookspec = pluggy.HookspecMarker("rlops")
hookimpl = pluggy.HookimplMarker("rlops")

Register = Callable[..., None]


def register_keywords(*names: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Declare the keywords a ``rlops_register_*`` hook's ``register`` accepts besides ``description``.

    The plugin manager refuses any other keyword, naming the hook and the keyword (a typo such as
    ``max_episode_step=5`` must not be accepted and ignored); a test checks each docstring's
    ``register(...)`` signature against this declaration.
    """

    def mark(spec: Callable[..., Any]) -> Callable[..., Any]:
        spec.register_keywords = frozenset(names)  # type: ignore[attr-defined]
        return spec

    return mark


@hookspec
@register_keywords("derived_params", "max_episode_steps")
def rlops_register_envs(register: Register) -> None:
    """Register environments by name.

    Call ``register(name, factory=None, *, derived_params=None, max_episode_steps=None, description="")``:
    ``factory(**kwargs) -> gymnasium.Env`` builds the env (leave it ``None`` to attach
    metadata to an existing gymnasium id); ``derived_params(unwrapped_env)`` recomputes
    attributes derived from physical parameters after domain randomization changed them
    (CartPole's ``polemass_length`` from ``length``). An ``EnvSpec(id=name)`` resolves
    plugin names first, then gymnasium ids. Results: all calls contribute; names are unique.
    """


@hookspec
@register_keywords()
def rlops_register_rewards(register: Register) -> None:
    """Register reward functions by name.

    Call ``register(name, function, *, description="")``. ``function`` is called with
    keyword arguments ``obs, action, next_obs, env_reward, terminated, truncated, outcome``
    plus the ``RewardSpec`` params and returns a float; accept ``**_`` for what you don't use.
    ``RewardSpec(ref=name)`` resolves the name and still checks the SHA-256 of the function's
    module source. Results: all calls contribute; names are unique.
    """


@hookspec
@register_keywords()
def rlops_register_architectures(register: Register) -> None:
    """Register policy network architectures by name.

    Call ``register(name, factory, *, description="")`` where
    ``factory(config: dict, observation_space, action_space) -> torch.nn.Module``. The module's
    ``forward(obs)`` returns action logits for Discrete action spaces, or ``(mean, log_std)``
    for Box. ``config`` is plain JSON stored in the bundle; weights go to safetensors.
    Results: all calls contribute; names are unique.
    """


@hookspec(firstresult=True)
def rlops_shield(observation: Any, action: Any, context: dict[str, Any]) -> Any:
    """Veto an action before the server executes it, and name a safe fallback.

    Called by the policy server for a decision's ``observation`` (float32 array) and a
    proposed ``action`` (int for Discrete, array for Box). ``context`` holds ``model``,
    ``policy_version`` and ``request`` (the client's optional ``context`` object). Return
    ``None`` to allow, or ``(fallback_action, reason)`` / ``rlops_plugin.serving.guards.Veto``
    to replace it. For Discrete policies the hook is called for *every* action with non-zero
    probability, so the logged propensity is exact: the probability that the executed action
    comes out of sampling plus shield. Results: the first non-``None`` answer wins.
    """


@hookspec(firstresult=True)
def rlops_guard_tool_call(call: dict[str, Any], context: dict[str, Any]) -> Any:
    """Veto an agent's tool call before it is returned, and name a safe response (the agent's shield).

    Called by the agent server for every tool call in a completion: ``call`` is ``{"name", "arguments"}``;
    ``context`` holds ``model``, ``policy_version``, ``session_id``, ``messages`` (the transcript the policy
    saw), ``tools`` (the schemas offered) and ``metadata`` (the request's). Return ``None`` to allow, or
    ``(safe_response_text, reason)`` / ``rlops_plugin.serving.guards.Veto`` to replace the whole answer by
    ``safe_response_text``. The veto is logged with its reason and counted; a vetoed choice's ``logprob``
    is ``null`` (the substituted text was not sampled). Results: the first non-``None`` answer wins.
    """


@hookspec
@register_keywords()
def rlops_register_trainers(register: Register) -> None:
    """Register policy-update algorithms by name.

    Call ``register(name, trainer_class, *, description="")``. The class follows
    ``rlops_plugin.training.base.Trainer``: a ``Config`` dataclass (one docstring per field), a
    ``data_kind`` (``"transitions"``, ``"preferences"`` or ``"simulator"``) and
    ``train(init, data, config, progress) -> TrainResult`` that starts from the init bundle's
    policy. ``rlops train --trainer NAME`` and the ``train_policy`` component look names up here.
    Results: all calls contribute; names are unique.
    """


@hookspec
@register_keywords()
def rlops_register_scenarios(register: Register) -> None:
    """Register safety and red-team scenario suites by name.

    Call ``register(name, suite, *, description="")`` where ``suite`` is a
    ``rlops_plugin.simulation.scenarios.ScenarioSuite`` or a callable returning one. Gates and
    ``rlops evaluate --scenarios NAME`` run every scenario of the suite on candidate and champion.
    Results: all calls contribute; names are unique.
    """


@hookspec
@register_keywords()
def rlops_register_gate_checks(register: Register) -> None:
    """Register promotion-gate checks by name.

    Call ``register(name, check, *, description="")`` where
    ``check(context) -> rlops_plugin.evaluation.gate.CheckResult`` inspects the evaluation
    context (candidate and champion reports, thresholds) and says pass/fail with a reason.
    ``gate(..., policy=GatePolicy(checks=[...]))`` runs the named checks. Results: all calls
    contribute; names are unique.
    """


@hookspec
@register_keywords("settings")
def rlops_register_monitors(register: Register) -> None:
    """Register drift monitors by name.

    Call ``register(name, monitor_factory, *, settings=None, description="")``; the factory takes the monitor's
    config dict and returns an object with ``signal`` (what it watches) and
    ``evaluate(reference, current) -> MonitorResult`` computed with Evidently over two windows of
    decision-log data. ``rlops monitor`` runs the monitors its config names. The config dict holds
    the monitor's own ``settings`` (``SignalConfig.settings``) when some are given; pass
    ``settings=("key", ...)`` to ``register`` to have unknown keys refused. Results: all calls
    contribute; names are unique.
    """


@hookspec
def rlops_on_trigger(event: Any) -> Any:
    """React to a retraining trigger fired by the monitor.

    ``event`` is a ``rlops_plugin.monitoring.triggers.TriggerEvent`` (rule, model, policy version,
    evidence, time). Return anything describing what was done (for instance a pipeline run id) or
    ``None``. All implementations are called; results are collected in a list and recorded with
    the event.
    """


@hookspec
@register_keywords("settings", "needs_arg")
def rlops_register_trigger_actions(register: Register) -> None:
    """Register retraining-trigger actions by name (what ``rlops monitor --on-trigger NAME[:ARG]`` runs).

    Call ``register(name, action, *, description="", settings=None, needs_arg="")`` where
    ``action(event, arg=None, **settings) -> Any`` handles one ``TriggerEvent`` after the
    ``rlops_on_trigger`` hooks: ``arg`` is the text after the first colon of the spec (``None``
    without one), ``settings`` the action's own keyword settings (``ActionSpec.settings`` in
    ``MonitorOptions.actions``); the return value is recorded in ``event.actions``. ``settings``
    (names) makes any other setting key an error naming it; ``needs_arg`` (for instance
    ``"a file: --on-trigger jsonl:PATH"``) makes a missing ARG one. Names contain no colon.
    Results: all calls contribute; names are unique.
    """


@hookspec
@register_keywords()
def rlops_register_policy_kinds(register: Register) -> None:
    """Register kinds of policy by name (``vector`` is built in; the agent kind registers here).

    Call ``register(name, kind, *, description="")`` where ``kind`` follows
    ``rlops_plugin.kinds.base.PolicyKind``: the policy part of a bundle (files, load), the serving
    engine (request parsing, decisions, the record logged), dataset builders and which trainers
    apply. A bundle's manifest names its kind; loading refuses a kind no plugin registered.
    Results: all calls contribute; names are unique.
    """


@hookspec
@register_keywords()
def rlops_register_judges(register: Register) -> None:
    """Register judges of agent answers by name (the agent graders are built in: ``expected_call``, ``no_pii``...).

    Call ``register(name, spec, *, description="")`` where ``spec`` is a
    ``rlops_plugin.kinds.agent.judges.JudgeSpec``: a code grader (``module:function`` + source hash), an
    OpenAI-compatible pairwise LLM judge (``base_url``, ``model``, ``prompt``) or a reward model (``model_uri``).
    ``make_judge(name)`` builds the runtime that compares two answers; ``label_pairs`` and ``judge_agreement``
    use it to label preference data and to measure agreement with people. Results: all calls contribute; names
    are unique.
    """


def hook_names() -> list[str]:
    """Names of every hookspec defined in this module."""
    return sorted(
        name
        for name, value in globals().items()
        if name.startswith("rlops_") and callable(value) and hasattr(value, "rlops_spec")
    )

