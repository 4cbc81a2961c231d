"""What a user reads when Serve gives up on a pipeline's replicas (cluster.deployer.start_failure)."""

from __future__ import annotations

from cluster.deployer import start_failure

TRACEBACK = """The deployment failed to start 3 times in a row. This may be due to a problem with its
constructor or initial health check failing. See controller logs for details. Error:
ray::ServeReplica:default--p:router.initialize_and_get_metadata() (pid=4242, ip=10.0.0.1)
  File "/corral/pipelines/loading.py", line 45, in load_step
    raise InvalidInput(
pipelines.errors.InvalidInput: step 'feature' could not load: OSError: no GPU. Fix the step's __init__"""


def test_the_steps_own_error_line_is_what_the_user_reads() -> None:
    status = {
        "status": "DEPLOY_FAILED",
        "message": "Failed to update the deployments ['router'].",
        "deployments": {"router": f"DEPLOY_FAILED: {TRACEBACK}"},
    }
    assert start_failure(status) == "step 'feature' could not load: OSError: no GPU. Fix the step's __init__"


def test_without_a_corral_error_serves_messages_are_passed_on() -> None:
    status = {
        "status": "DEPLOY_FAILED",
        "message": "Failed to update the deployments ['main.model'].",
        "deployments": {"main.model": "DEPLOY_FAILED: the replica died: out of memory", "router": "HEALTHY"},
    }
    assert start_failure(status) == (
        "pipeline failed to start: Failed to update the deployments ['main.model']. "
        "main.model: DEPLOY_FAILED: the replica died: out of memory; router: HEALTHY"
    )
