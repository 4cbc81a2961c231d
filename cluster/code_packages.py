"""Uploaded step code: checking it without running it, and laying it out for Ray's runtime_env."""

from __future__ import annotations

import ast
import io
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from pipelines.errors import InvalidInput, PayloadTooLarge

MAX_CODE_BYTES = 20 * 1024 * 1024


@dataclass(frozen=True)
class CodeLimits:
    """What a zip of step code may hold, checked from its directory before anything is expanded
    (a 1.5 MB zip can hold a 1.5 GB file)."""

    max_files: int = 1_000
    max_unpacked_bytes: int = 50 * 1024 * 1024


def read_sources(filename: str, data: bytes, limits: CodeLimits | None = None) -> dict[str, str]:
    """Map of 'pkg/mod.py' -> source for a `.py` module or a `.zip` package; rejects anything else."""
    limits = limits or CodeLimits()
    if len(data) > MAX_CODE_BYTES:
        raise PayloadTooLarge(f"code upload is {len(data)} bytes; the limit is {MAX_CODE_BYTES}")
    name = PurePosixPath(filename).name
    if name.endswith(".py"):
        stem = name[:-3]
        if not stem.isidentifier():
            raise InvalidInput(f"module file {name!r} is not an importable name: rename it like my_steps.py")
        try:
            return {name: data.decode("utf-8")}
        except UnicodeDecodeError as exc:
            raise InvalidInput(f"{name} is not UTF-8 text: save it as UTF-8") from exc
    if name.endswith(".zip"):
        try:
            archive = zipfile.ZipFile(io.BytesIO(data))
        except zipfile.BadZipFile as exc:
            raise InvalidInput(f"{name} is not a valid zip archive: {exc}") from exc
        members = archive.infolist()
        _check_archive_size(name, members, limits)
        sources = {}
        for info in members:
            path = PurePosixPath(info.filename)
            if path.is_absolute() or ".." in path.parts:
                raise InvalidInput(f"{name} holds an unsafe path {info.filename!r}: use relative paths only")
            if info.filename.endswith(".py"):
                with archive.open(info) as member:
                    # At most the size the directory declared: a forged directory cannot make us expand more.
                    source = member.read(info.file_size + 1)
                if len(source) > info.file_size:
                    raise InvalidInput(f"{name} is corrupt: {info.filename!r} is larger than its directory says")
                sources[str(path)] = source.decode("utf-8", errors="replace")
        if not sources:
            raise InvalidInput(f"{name} holds no .py files: zip a package directory with its __init__.py")
        return sources
    raise InvalidInput(f"code file {name!r} must be a .py module or a .zip package")


def _check_archive_size(name: str, members: list[zipfile.ZipInfo], limits: CodeLimits) -> None:
    if len(members) > limits.max_files:
        raise PayloadTooLarge(
            f"{name} holds {len(members):,} files, above the limit of {limits.max_files:,}: zip only the "
            "package's sources, or raise CORRAL_MAX_CODE_FILES"
        )
    unpacked = sum(info.file_size for info in members)
    if unpacked > limits.max_unpacked_bytes:
        raise PayloadTooLarge(
            f"{name} expands to {unpacked:,} bytes, above the limit of {limits.max_unpacked_bytes:,}: zip only the "
            "package's sources (no data or models: upload those as models or datasets), or raise "
            "CORRAL_MAX_CODE_UNPACKED_BYTES"
        )


def top_level_modules(sources: dict[str, str]) -> list[str]:
    """What `import X` finds in the upload: single-file modules and package directories."""
    modules = set()
    for path in sources:
        parts = PurePosixPath(path).parts
        if len(parts) == 1:
            modules.add(parts[0][:-3])
        elif f"{parts[0]}/__init__.py" in sources:
            modules.add(parts[0])
    for module in modules:
        try:
            for tree_path, src in sources.items():
                ast.parse(src, filename=tree_path)
        except SyntaxError as exc:
            raise InvalidInput(f"syntax error in {exc.filename} line {exc.lineno}: {exc.msg}") from exc
        if not module.isidentifier():
            raise InvalidInput(f"{module!r} is not an importable module name")
    if not modules:
        raise InvalidInput(
            "the upload has no importable module: add a .py file or a package with __init__.py"
        )
    return sorted(modules)


def defines_class(sources: dict[str, str], import_path: str) -> bool:
    """Whether 'pkg.mod:Class' names a class defined at the top level of that module (by parsing, not importing)."""
    module, _, class_name = import_path.partition(":")
    base = module.replace(".", "/")
    source = sources.get(f"{base}.py") or sources.get(f"{base}/__init__.py")
    if source is None:
        return False
    tree = ast.parse(source)
    return any(isinstance(node, ast.ClassDef) and node.name == class_name for node in tree.body)


def materialize(sources: dict[str, str], into: Path) -> list[str]:
    """Write the modules under `into` and return the py_modules entries for Ray's runtime_env."""
    into.mkdir(parents=True, exist_ok=True)
    for path, src in sources.items():
        target = into / path
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.exists():
            target.write_text(src)
    entries = []
    for module in top_level_modules(sources):
        single = into / f"{module}.py"
        entries.append(str(single if single.exists() else into / module))
    return entries
