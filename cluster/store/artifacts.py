"""Content-addressed artifact store: a local directory or any pyarrow.fs URI (s3://, gs://, ...)."""

from __future__ import annotations

import contextlib
import hashlib
from pathlib import Path

import pyarrow.fs as pafs

from pipelines.storage import filesystem_of, redacted


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class ArtifactStore:
    """Blobs keyed by their sha256; writing the same bytes twice stores them once.

    Step replicas get the bound `get` (pickled by Ray) and read from the store themselves, on
    whatever node they run: with an object store every node needs its credentials (AWS_* variables).
    """

    def __init__(self, uri: str) -> None:
        self.uri = uri
        self.fs, self.root = filesystem_of(uri)
        self.local = isinstance(self.fs, pafs.LocalFileSystem)
        if self.local:
            Path(self.root).mkdir(parents=True, exist_ok=True)

    def _path(self, digest: str) -> str:
        return f"{self.root}/{digest[:2]}/{digest}"

    def put(self, data: bytes) -> str:
        digest = sha256_of(data)
        path = self._path(digest)
        # Stored already, unless a failed upload left a truncated object: then this one replaces it.
        if self.fs.get_file_info(path).size != len(data):
            if self.local:
                self.fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
                tmp = f"{path}.tmp"
                # write then move, so a reader never sees half a file
                with self.fs.open_output_stream(tmp) as out:
                    out.write(data)
                self.fs.move(tmp, path)
            else:
                self._upload(path, data)
        return digest

    def _upload(self, path: str, data: bytes) -> None:
        """One object, visible once complete (no rename on an object store, nor a need for one)."""
        try:
            with self.fs.open_output_stream(path) as out:
                out.write(data)
        except BaseException:
            # Closing a stream that failed midway may still complete the upload: take that back.
            with contextlib.suppress(OSError):
                self.fs.delete_file(path)
            raise

    def get(self, digest: str) -> bytes:
        with self.fs.open_input_stream(self._path(digest)) as src:
            data: bytes = src.read()
        if sha256_of(data) != digest:
            raise OSError(f"artifact {digest} is corrupt in {redacted(self.uri)}: upload it again")
        return data

    def local_path(self, digest: str) -> Path | None:
        """The file itself when the store is a local directory (lets Ray ship it as-is); None otherwise."""
        if self.local:
            return Path(self._path(digest))
        return None
