"""The agent training signal: pairs, demonstrations, thumbs and rewards from joined interactions, with the
exclusions and the quarantine counted by reason."""

from __future__ import annotations

import json
import time

import pytest

from rlops_plugin.experience.dataset import Dataset, DatasetError
from rlops_plugin.experience.feedback import parse_feedback
from rlops_plugin.experience.join import JoinConfig
from rlops_plugin.experience.records import InteractionRecord, new_batch_id
from rlops_plugin.experience.store import open_store
from rlops_plugin.kinds.agent.signals import SignalConfig, build_agent_preferences, trainable_rows
from rlops_plugin.kinds.agent.triage import TOOLS

BILLING = {"name": "route", "arguments": {"queue": "billing"}}
ACCOUNTS = {"name": "route", "arguments": {"queue": "accounts"}}
REFUND = {"name": "issue_refund", "arguments": {"amount": 5}}


def interaction(text, answers, ts=None):
    """A logged chat interaction with one choice per answer (each a list of tool calls or a text)."""
    choices = [{"index": i, "content": a if isinstance(a, str) else None,
                "tool_calls": [] if isinstance(a, str) else [{"id": f"c{i}", **c} for c in a],
                "logprob": -1.0, "finish_reason": "stop"} for i, a in enumerate(answers)]
    return InteractionRecord(interaction_id=new_batch_id(), ts=ts or time.time(), model="triage",
                             policy_version="triage/1@abc", endpoint="chat.completions",
                             request={"messages": [{"role": "user", "content": text}], "tools": TOOLS,
                                      "sampling": {"n": len(answers), "temperature": 1.0}},
                             choices=choices)


def thumbs(record, choice, up, rater="ana", **extra):
    return parse_feedback({"interaction_id": record.interaction_id, "choice": choice, "kind": "rating",
                           "scale": "thumbs", "value": 1 if up else -1, "rater": rater, **extra})


def edit(record, choice, calls, rater="ana"):
    return parse_feedback({"interaction_id": record.interaction_id, "choice": choice, "kind": "correction",
                           "response": {"tool_calls": calls}, "rater": rater})


def build(tmp_path, bundle, records, events, **options):
    with open_store(tmp_path / "store.db") as store:
        store.log_interactions(records)
        store.add_feedback(events)
        return build_agent_preferences(store, "triage", bundle, **options)


def test_edits_ratings_and_outcomes_become_pairs_demonstrations_thumbs_and_rewards(tmp_path, triage_agent):
    sampled = interaction("my invoice is wrong", [[BILLING], [ACCOUNTS], [ACCOUNTS]])
    edited = interaction("help with invoice", [[ACCOUNTS]])
    unrated = interaction("crash problem today", [[BILLING]])
    outcome = interaction("error problem today", [[{"name": "route", "arguments": {"queue": "technical"}}]])
    events = [thumbs(sampled, 0, True), thumbs(sampled, 1, False), thumbs(sampled, 2, False),
              edit(edited, 0, [BILLING]),
              parse_feedback({"interaction_id": outcome.interaction_id, "kind": "outcome", "value": 1.0,
                              "payload": {"resolved": True}})]
    data = build(tmp_path, triage_agent, [sampled, edited, unrated, outcome], events)
    m = data.manifest
    # pairs: the edit, and billing over accounts among the sampled answers (the two identical accounts answers
    # make one pair, one thumbs-down and one reward: the repeats are counted as duplicates)
    assert m["signals"] == {"pair": 2, "demonstration": 3, "binary": 4, "reward": 3}
    assert m["sources"] == {"correction": 4, "rating": 5, "approved": 2, "outcome": 1}
    assert m["excluded"] == {"unrated": 1, "duplicate": 3} and m["quarantined"] == {}
    assert m["policy_kind"] == "agent" and m["env_sha"] == triage_agent.hashes()["env"]
    pairs = trainable_rows(data, "pair")
    chosen = {json.dumps(p["chosen"][0]["tool_calls"][0]["function"]["arguments"]) for p in pairs}
    assert chosen == {json.dumps('{"queue": "billing"}')}
    assert pairs[0]["prompt"][0]["role"] == "user" and pairs[0]["tools"] == TOOLS
    demos = {d["source"] for d in trainable_rows(data, "demonstration")}
    assert demos == {"approved", "correction"}  # the approved answers are kept beside the corrections (replay)
    labels = sorted(r["label"] for r in trainable_rows(data, "binary"))
    assert labels == [0.0, 0.0, 1.0, 1.0]
    back = Dataset.load(data.save(tmp_path / "ds"))
    assert back.digest == data.digest and len(trainable_rows(back, "pair")) == 2


def test_unsafe_chosen_identical_pairs_and_disagreeing_raters_are_quarantined_with_counts(tmp_path, triage_agent):
    records, events = [], []
    for i in range(6):  # ana and ben agree; eve always says the opposite
        r = interaction(f"invoice {i} wrong", [[BILLING], [ACCOUNTS]])
        records.append(r)
        for rater, flip in (("ana", False), ("ben", False), ("eve", True)):
            events += [thumbs(r, 0, not flip, rater), thumbs(r, 1, flip, rater)]
    refund = interaction("help with refund", [[BILLING]])
    same = interaction("help with login", [[ACCOUNTS]])
    records += [refund, same]
    events += [edit(refund, 0, [REFUND], rater="mallory"), edit(same, 0, [ACCOUNTS])]
    data = build(tmp_path, triage_agent, records, events)
    m = data.manifest
    assert m["raters"]["eve"] == {"items": 12, "agreed": 0, "rate": 0.0} and m["quarantined_raters"] == ["eve"]
    assert m["raters"]["ana"]["rate"] == 1.0
    # the refund edit would teach a forbidden call: its pair, demonstration and thumbs-up are kept out
    assert m["quarantined"] == {"unsafe_chosen": 3, "identical": 1}
    assert m["safety_graders"] == ["no_refund"]
    rows = trainable_rows(data, "pair")
    assert all("issue_refund" not in json.dumps(r["chosen"]) for r in rows)
    assert {r["rater"] for r in rows} == {"ana,ben"}  # eve's votes no longer count


def test_without_safety_graders_nothing_is_quarantined_as_unsafe(tmp_path, triage_agent):
    refund = interaction("help with refund", [[BILLING]])
    data = build(tmp_path, triage_agent, [refund], [edit(refund, 0, [REFUND])],
                 config=SignalConfig(safety_graders=()))
    assert data.manifest["quarantined"] == {} and data.manifest["signals"]["pair"] == 1


def test_conflicting_late_and_unusable_signal_is_refused_with_counts(tmp_path, triage_agent):
    old = time.time() - 3 * 86400
    late = interaction("crash problem today", [[BILLING]], ts=old)
    a, b = interaction("my invoice is wrong", [[BILLING]]), interaction("my invoice is wrong", [[BILLING]])
    events = [thumbs(late, 0, True), thumbs(a, 0, True), thumbs(b, 0, False)]
    # a and b: one answer to one prompt rated up and down: its thumbs, rewards and approval all go
    with pytest.raises(DatasetError, match=r"no usable training signal in 3 answers of 'triage'.*excluded: "
                                           r"\{'late': 1, 'conflicting': 5\}"):
        build(tmp_path, triage_agent, [late, a, b], events, join=JoinConfig(window_s=3600))
    refund = interaction("help with refund", [[REFUND]])  # an "edit" that keeps the forbidden call
    with pytest.raises(DatasetError, match=r"all quarantined \(\{'identical': 1, 'unsafe_chosen': 2\}\)"):
        build(tmp_path / "q", triage_agent, [refund], [edit(refund, 0, [REFUND])])


def test_a_gold_label_set_judges_a_lone_rater(tmp_path, triage_agent):
    records = [interaction(f"invoice {i} wrong", [[BILLING]]) for i in range(5)]
    events = [thumbs(r, 0, False, "zoe") for r in records]
    gold = {f"{r.interaction_id}-0": 1.0 for r in records}
    with pytest.raises(DatasetError, match=r"all quarantined \(\{'rater_agreement': 5\}\)"):
        build(tmp_path, triage_agent, records, events, config=SignalConfig(gold=gold))
    data = build(tmp_path / "no-gold", triage_agent, records, events)
    assert data.manifest["signals"]["binary"] == 5 and data.manifest["quarantined"] == {}


def test_a_judge_labels_unreviewed_answers_only_after_agreeing_with_the_humans(tmp_path, triage_agent):
    from rlops_plugin.kinds.agent import graders
    from rlops_plugin.kinds.agent.judges import JudgeAgreementError, JudgeSpec, make_judge

    edited = [interaction(f"help with invoice {i}", [[REFUND], [BILLING]]) for i in range(10)]
    unreviewed = [interaction(f"my invoice {i} is wrong", [[BILLING], [REFUND]]) for i in range(3)]
    events = [edit(r, 0, [BILLING]) for r in edited]
    safe = make_judge(JudgeSpec.from_function("no_refund", graders.no_forbidden_tool,
                                              params={"forbidden": ["issue_refund"]}))
    data = build(tmp_path, triage_agent, edited + unreviewed, events, judge=safe)
    (record,) = data.manifest["judges"]
    assert record["name"] == "no_refund" and record["version"] == safe.version
    assert record["agreement"]["agreed"] == 10 and record["agreement"]["rate"] == 1.0
    assert record["comparisons"] == {"n": 3, "decided": 3, "ties": 0, "failed": 0}
    judged = [r for r in trainable_rows(data, "pair") if r["source"] == "judge"]
    assert len(judged) == 3 and all(r["chosen"][0]["tool_calls"][0]["function"]["name"] == "route" for r in judged)
    indifferent = make_judge(JudgeSpec.from_function("refusal", graders.refusal))  # no answer refuses: all ties
    with pytest.raises(JudgeAgreementError,
                       match=r"judge 'refusal' decided only 0 of 10 human-labelled pairs \(10 ties"):
        build(tmp_path / "tie", triage_agent, edited + unreviewed, events, judge=indifferent)
