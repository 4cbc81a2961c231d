"""Request/response codecs: V2 (JSON and binary tensors), pandas records, Arrow IPC."""

from pipelines.codecs.base import Decoded, WireFormat
from pipelines.codecs.content import SUPPORTED_TYPES, decode_request, encode_response, wire_format
from pipelines.codecs.v2 import v2_datatype

__all__ = [
    "SUPPORTED_TYPES",
    "Decoded",
    "WireFormat",
    "decode_request",
    "encode_response",
    "v2_datatype",
    "wire_format",
]
