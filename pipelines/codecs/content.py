"""Content-type dispatch: which codec reads a request body, and the reply in the same format."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from pipelines.codecs.arrow import FILE_TYPE, STREAM_TYPE, decode_arrow, encode_arrow
from pipelines.codecs.base import Decoded, WireFormat
from pipelines.codecs.records import CONTENT_TYPE as RECORDS_TYPE
from pipelines.codecs.records import decode_records, encode_records
from pipelines.codecs.v2 import HEADER_LENGTH, decode_v2, encode_v2
from pipelines.errors import BadPayload, PayloadTooLarge, UnsupportedMediaType
from pipelines.frame import Data, Frame, as_table

SUPPORTED_TYPES = (
    "application/json (V2 inference request)",
    RECORDS_TYPE,
    FILE_TYPE,
    STREAM_TYPE,
    "application/octet-stream (V2 binary tensors)",
)


def decode_request(
    body: bytes, content_type: str | None, headers: Mapping[str, str], *, max_bytes: int, frames: bool = True
) -> Decoded:
    """Decode a request body by its Content-Type. `headers` has lower-case keys. With `frames`,
    inputs that a Frame can hold come as one (the fast path, pipelines.frame)."""
    if len(body) > max_bytes:
        raise PayloadTooLarge(
            f"the body has {len(body)} bytes, above the limit of {max_bytes}; send smaller batches "
            "or raise CORRAL_MAX_PAYLOAD_BYTES"
        )
    if not body:
        raise BadPayload("the request body is empty; send the inputs as one of: " + "; ".join(SUPPORTED_TYPES))
    header_length = headers.get(HEADER_LENGTH)
    fmt = WireFormat.V2 if header_length is not None else wire_format(content_type)
    if fmt is WireFormat.RECORDS:
        return decode_records(body, frames=frames)
    if fmt is WireFormat.V2:  # the binary extension too when its header is there, whatever the media type
        return decode_v2(body, header_length, frames=frames)
    decoded = decode_arrow(body, fmt)
    frame = Frame.from_arrow(decoded.table) if frames else None  # numpy views of the decoded buffers
    return decoded if frame is None else replace(decoded, data=frame)


def encode_response(
    outputs: Data, decoded: Decoded, *, model_name: str, model_version: str, parameters: dict[str, Any]
) -> tuple[bytes, dict[str, str]]:
    """Encode the outputs (a table or a Frame) in the request's format: (body, headers with "content-type")."""
    if decoded.fmt is WireFormat.V2:
        return encode_v2(outputs, decoded, model_name=model_name, model_version=model_version, parameters=parameters)
    if decoded.fmt is WireFormat.RECORDS:
        return encode_records(outputs)
    return encode_arrow(as_table(outputs), decoded.fmt)


@functools.lru_cache(maxsize=64)  # clients repeat the same few Content-Type strings
def wire_format(content_type: str | None) -> WireFormat:
    """The wire format a Content-Type names; a missing type means V2 (tritonclient sends none)."""
    media, params = _parse(content_type or "")
    if media in ("", "application/octet-stream"):
        return WireFormat.V2
    if media == "application/json":
        fmt = params.get("format")
        if fmt is None:
            return WireFormat.V2
        if fmt == "pandas-records":
            return WireFormat.RECORDS
        raise UnsupportedMediaType(
            f"Content-Type {content_type!r}: format={fmt} is not supported; use format=pandas-records for "
            "a list of records, or no format for a V2 request"
        )
    if media == FILE_TYPE:
        return WireFormat.ARROW_FILE
    if media == STREAM_TYPE:
        return WireFormat.ARROW_STREAM
    raise UnsupportedMediaType(
        f"Content-Type {content_type!r} is not supported; send one of: " + "; ".join(SUPPORTED_TYPES)
    )


def _parse(content_type: str) -> tuple[str, dict[str, str]]:
    """Media type and parameters, lower-cased (RFC 9110: both are case-insensitive here)."""
    media, *rest = content_type.split(";")
    params: dict[str, str] = {}
    for item in rest:
        key, _, value = item.partition("=")
        params[key.strip().lower()] = value.strip().strip('"').lower()
    return media.strip().lower(), params
