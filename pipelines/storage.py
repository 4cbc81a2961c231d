"""Storage locations: a local directory or a pyarrow.fs URI (`s3://bucket/prefix?endpoint_override=...`).

Credentials never need to be in the URI: pyarrow's S3 client takes them from the standard AWS
chain (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN, ~/.aws, instance roles).
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import pyarrow.fs as pafs

_SECRET_PARAMS = {"access_key", "secret_key", "session_token"}


def is_uri(location: str) -> bool:
    """True for `scheme://...` (a one-letter scheme is a Windows drive, not a URI)."""
    scheme = urlsplit(location).scheme
    return "://" in location and len(scheme) > 1


def filesystem_of(location: str) -> tuple[pafs.FileSystem, str]:
    """(filesystem, root path inside it) of a local directory or URI; a local root is absolute."""
    if is_uri(location):
        fs, root = pafs.FileSystem.from_uri(location)
        return fs, root.rstrip("/")
    return pafs.LocalFileSystem(), str(Path(location).expanduser().resolve())


def child_location(location: str, name: str) -> str:
    """`location/name`, keeping a URI's query (`s3://b/p?x=1` -> `s3://b/p/name?x=1`)."""
    if not is_uri(location):
        return str(Path(location) / name)
    parts = urlsplit(location)
    return urlunsplit(parts._replace(path=parts.path.rstrip("/") + "/" + name))


def redacted(location: str) -> str:
    """The location fit for logs and messages: a secret key in it (`s3://KEY:SECRET@bucket`) hidden."""
    if not is_uri(location):
        return location
    parts = urlsplit(location)
    netloc = parts.netloc
    if "@" in netloc:
        user, _, host = netloc.rpartition("@")
        netloc = f"{user.split(':', 1)[0]}:***@{host}"
    query = [(k, "***" if k in _SECRET_PARAMS else v) for k, v in parse_qsl(parts.query, keep_blank_values=True)]
    return urlunsplit(parts._replace(netloc=netloc, query=urlencode(query, safe=":/")))


def check_reachable(location: str) -> None:
    """Raise OSError saying what to fix when an object-store location cannot be used (bucket
    missing, endpoint down, credentials refused); local directories are created when first used."""
    if not is_uri(location):
        return
    shown = redacted(location)
    try:
        fs, root = filesystem_of(location)
        bucket = root.split("/", 1)[0]
        if fs.get_file_info(bucket).type == pafs.FileType.NotFound:
            raise OSError(f"{shown}: bucket {bucket!r} does not exist: create it first")
        fs.get_file_info(pafs.FileSelector(root, allow_not_found=True))  # a listing: the credentials work
    except (OSError, ValueError) as exc:  # pyarrow says ArrowInvalid (a ValueError) for a malformed URI
        if str(exc).startswith(shown):
            raise
        raise OSError(
            f"{shown} is not reachable ({str(exc).replace(location, shown)}): check the URI, its endpoint "
            "and the AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_REGION variables"
        ) from exc
