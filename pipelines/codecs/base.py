"""Types shared by the codecs: the wire formats and what decoding a request yields."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import orjson
import pyarrow as pa

from pipelines.errors import InvalidInput
from pipelines.frame import Data, as_table

# orjson writes NaN and +-Infinity as null, which is what the contract promises for NaN.
JSON_OPTIONS = orjson.OPT_SERIALIZE_NUMPY


class WireFormat(str, Enum):  # noqa: UP042 - the public contract; str() stays "WireFormat.V2"
    """How a request body (and so its reply) is encoded."""

    V2 = "v2"
    RECORDS = "pandas-records"
    ARROW_FILE = "arrow-file"
    ARROW_STREAM = "arrow-stream"


@dataclass(frozen=True)
class Decoded:
    """A decoded request: the inputs (a table, or a Frame on the fast path: pipelines.frame) plus
    what the reply must echo or honour."""

    data: Data
    fmt: WireFormat
    request_id: str | None = None  # V2 "id", echoed back
    binary_output: bool = False  # V2 binary extension wanted in the reply
    requested_outputs: tuple[str, ...] | None = None  # V2 "outputs" names, or None = all
    parameters: dict[str, Any] = field(default_factory=dict)  # V2 request "parameters"

    @property
    def table(self) -> pa.Table:
        return as_table(self.data)


def require_rows(table: pa.Table, what: str) -> pa.Table:
    """An empty batch is a caller mistake: nothing to infer, and steps need not handle it."""
    if table.num_rows == 0:
        raise InvalidInput(f"the {what} holds no rows; send at least one row")
    return table


def json_default(value: Any) -> Any:
    """orjson fallback for Arrow values JSON lacks (binary, decimal, durations...)."""
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).decode("utf-8", "backslashreplace")
    return str(value)
