"""Content-addressed artifact store: a local directory or any pyarrow.fs URI (s3://, gs://, ...)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pyarrow.fs as pafs


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class ArtifactStore:
    """Blobs keyed by their sha256; writing the same bytes twice stores them once."""

    def __init__(self, uri: str) -> None:
        self.uri = uri
        if "://" in uri:
            self.fs, self.root = pafs.FileSystem.from_uri(uri)
        else:
            Path(uri).mkdir(parents=True, exist_ok=True)
            self.fs, self.root = pafs.LocalFileSystem(), str(Path(uri).resolve())

    def _path(self, digest: str) -> str:
        return f"{self.root}/{digest[:2]}/{digest}"

    def put(self, data: bytes) -> str:
        digest = sha256_of(data)
        path = self._path(digest)
        if self.fs.get_file_info(path).type == pafs.FileType.NotFound:
            self.fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
            tmp = f"{path}.tmp"
            # write then move, so a reader never sees half a file
            with self.fs.open_output_stream(tmp) as out:
                out.write(data)
            self.fs.move(tmp, path)
        return digest

    def get(self, digest: str) -> bytes:
        with self.fs.open_input_stream(self._path(digest)) as src:
            data: bytes = src.read()
        if sha256_of(data) != digest:
            raise OSError(f"artifact {digest} is corrupt in {self.uri}: upload it again")
        return data

    def local_path(self, digest: str) -> Path | None:
        """The file itself when the store is a local directory (lets Ray ship it as-is)."""
        if isinstance(self.fs, pafs.LocalFileSystem):
            return Path(self._path(digest))
        return None
