"""A remote segment: consecutive `own` steps, each its own deployment, chained through handles."""

from __future__ import annotations

from collections.abc import Sequence

import pyarrow as pa
from ray.serve.handle import DeploymentHandle

from pipelines.ipc import table_from_ipc, table_to_ipc
from serving.errors import as_domain_error


class RemoteSegment:
    """`await segment(table)`: the first step's handle gets the table, each next one the previous
    one's response, which Serve hands over without a round trip through this replica. Tables
    travel as Arrow IPC bytes (pipelines.ipc): far cheaper for Serve to carry than pickled tables."""

    def __init__(self, handles: Sequence[DeploymentHandle]) -> None:
        self.handles = tuple(handles)

    async def __call__(self, table: pa.Table) -> pa.Table:
        try:
            response = self.handles[0].remote(table_to_ipc(table))
            for handle in self.handles[1:]:
                response = handle.remote(response)
            result = table_from_ipc(await response)
        except Exception as exc:
            raise as_domain_error(exc) from exc
        return result
