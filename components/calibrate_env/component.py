"""Fit the simulator's declared physics to the newest logged transitions (system identification)."""

from typing import NamedTuple

from kfp import dsl

from rlops_plugin.pipelines.images import component_image


@dsl.component(base_image=component_image(), install_kfp_package=False)
def calibrate_env(dataset: dsl.Input[dsl.Dataset], bundle_uri: str, calibration: dsl.Output[dsl.Artifact],
                  recent: int = 0, params_json: str = "", tracking_uri: str = "",
                  ) -> NamedTuple("Outputs", [("calibration_json", str), ("summary", str)]):
    """Least-squares fit of the EnvSpec's calibration parameters; '' when recent is 0 (see pipelines.steps)."""
    from collections import namedtuple

    from rlops_plugin.pipelines import steps

    out = steps.calibrate_env(dataset.path, bundle_uri, recent, params_json, calibration.path, tracking_uri)
    calibration.metadata.update({"summary": out["summary"]})
    return namedtuple("Outputs", ["calibration_json", "summary"])(out["calibration_json"], out["summary"])
