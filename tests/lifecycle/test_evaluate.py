"""The evaluation report's HTML escapes what it shows (model names and failure reasons are data)."""

from rlops_plugin.evaluation.evaluate import PolicyEvaluation
from rlops_plugin.lifecycle.evaluate import evaluation_html


def test_evaluation_html_is_escaped():
    evaluation = PolicyEvaluation("<script>alert(1)</script>", 3, 20_000,
                                  {"return_mean": 1.0, "return_ci_low": 0.5, "return_ci_high": 2.0},
                                  {"suite": [{"scenario": "s", "passed": False, "return_mean": 1.0,
                                              "failures": ["<img src=x onerror=alert(1)>"]}]})
    page = evaluation_html(evaluation)
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<img" not in page and "FAIL" in page and "seeds 20000..20002" in page
