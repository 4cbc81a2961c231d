"""Arrow IPC bodies (file or stream format): a table in, a table out in the same format."""

from __future__ import annotations

import pyarrow as pa

from pipelines.codecs.base import Decoded, WireFormat, require_rows
from pipelines.errors import BadPayload

FILE_TYPE = "application/vnd.apache.arrow.file"
STREAM_TYPE = "application/vnd.apache.arrow.stream"
_FILE_MAGIC = b"ARROW1"


def decode_arrow(body: bytes, fmt: WireFormat) -> Decoded:
    """Read a whole IPC file or stream; anything unreadable is a BadPayload saying how to write one."""
    buffer = pa.py_buffer(body)
    try:
        if fmt is WireFormat.ARROW_FILE:
            table = pa.ipc.open_file(buffer).read_all()
        else:
            table = pa.ipc.open_stream(buffer).read_all()
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, OSError, ValueError) as exc:
        raise BadPayload(_unreadable(body, fmt, exc)) from None
    return Decoded(require_rows(table, "Arrow table"), fmt)


def _unreadable(body: bytes, fmt: WireFormat, exc: Exception) -> str:
    if fmt is WireFormat.ARROW_FILE:
        hint = "send a complete IPC file written with pyarrow.ipc.new_file"
        if not body.startswith(_FILE_MAGIC):
            hint += f" (an IPC stream needs Content-Type: {STREAM_TYPE})"
        return f"could not read the Arrow file: {exc}; {hint}"
    hint = "send a complete IPC stream written with pyarrow.ipc.new_stream"
    if body.startswith(_FILE_MAGIC):
        hint += f" (this looks like an IPC file: send it with Content-Type: {FILE_TYPE})"
    return f"could not read the Arrow stream: {exc}; {hint}"


def encode_arrow(table: pa.Table, fmt: WireFormat) -> tuple[bytes, dict[str, str]]:
    """The table as an IPC file or stream, whichever the request used."""
    sink = pa.BufferOutputStream()
    if fmt is WireFormat.ARROW_FILE:
        writer, content_type = pa.ipc.new_file(sink, table.schema), FILE_TYPE
    else:
        writer, content_type = pa.ipc.new_stream(sink, table.schema), STREAM_TYPE
    with writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes(), {"content-type": content_type}
