"""Exit handler: record the improvement cycle in the audit trail whatever happened."""

from kfp import dsl

from rlops_plugin.pipelines.images import component_image


@dsl.component(base_image=component_image(), install_kfp_package=False)
def record_cycle(name: str, status: dsl.PipelineTaskFinalStatus, tracking_uri: str = "",
                 pipeline: str = "continuous-improvement") -> str:
    """Return the audit event's MLflow run id (``pipeline`` names the cycle in the event)."""
    from rlops_plugin.pipelines import steps

    return steps.record_cycle(name, status.state, status.error_message or "", status.pipeline_job_resource_name,
                              tracking_uri, pipeline)
