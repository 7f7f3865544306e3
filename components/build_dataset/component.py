"""Extract a training dataset (transitions or preference pairs) from the decision log."""

from typing import NamedTuple

from kfp import dsl

from rlops_plugin.pipelines.images import component_image


@dsl.component(base_image=component_image(), install_kfp_package=False)
def build_dataset(store: str, bundle_uri: str, dataset: dsl.Output[dsl.Dataset], served_model: str = "policy",
                  kind: str = "transitions", window_s: float = 3600.0, grace_s: float = 300.0,
                  tracking_uri: str = "", judge: str = "", judge_min_agreement: float = 0.0,
                  ) -> NamedTuple("Outputs", [("rows", int), ("digest", str)]):
    """Join feedback to decisions and write a versioned Parquet dataset (see rlops_plugin.pipelines.steps).

    ``judge`` (agents: a registered judge labelling unreviewed answers) is '' for none.
    """
    from collections import namedtuple

    from rlops_plugin.pipelines import steps

    out = steps.build_dataset(store, bundle_uri, dataset.path, served_model, kind, window_s, grace_s, tracking_uri,
                              judge, judge_min_agreement)
    dataset.metadata.update({"rows": out["rows"], "digest": out["digest"], "excluded": out["excluded"],
                             "judges": out["judges"]})
    return namedtuple("Outputs", ["rows", "digest"])(out["rows"], out["digest"])
