"""A remote segment: consecutive `own` steps, each its own deployment, chained through handles."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pyarrow as pa
from ray.serve.handle import DeploymentHandle

from deployments.ray_private import replica_assigned
from pipelines.errors import NotReady
from pipelines.frame import Data, as_table
from pipelines.ipc import table_from_ipc, table_to_ipc
from serving.errors import as_domain_error

# What a request that found a step scaled to zero is told to wait before it retries: a replica
# here starts (process, imports, model load) in a few seconds.
COLD_START_RETRY_S = 5


class RemoteSegment:
    """`await segment(table)`: the first step's handle gets the table, each next one the previous
    one's response, which Serve hands over without a round trip through this replica. Tables
    travel as Arrow IPC bytes (pipelines.ipc): far cheaper for Serve to carry than pickled tables."""

    def __init__(self, handles: Sequence[DeploymentHandle]) -> None:
        self.handles = tuple(handles)

    async def __call__(self, table: Data) -> pa.Table:
        first = None
        try:
            response = first = self.handles[0].remote(table_to_ipc(as_table(table)))
            for handle in self.handles[1:]:
                response = handle.remote(response)
            result = table_from_ipc(await response)
        except asyncio.CancelledError:
            # The request's deadline passed. If no replica of the first step ever took it, the step
            # is scaling up from zero, restarting, or all its replicas are busy: a 503 to retry, not
            # a 504 for work that ran too long.
            if first is not None and not replica_assigned(first):
                raise NotReady(
                    f"no replica of step {self.handles[0].deployment_name} took the request before its deadline "
                    f"(scaling up from zero, restarting, or all busy): retry in {COLD_START_RETRY_S} s, or allow "
                    "a longer X-Corral-Timeout-Ms",
                    retry_after_s=COLD_START_RETRY_S,
                ) from None
            raise
        except Exception as exc:
            raise as_domain_error(exc) from exc
        return result
