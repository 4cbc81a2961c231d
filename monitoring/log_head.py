"""Which files of a log partition on an object store are live: the partition's head object.

An object store has no rename and no lock that processes share, so a merge cannot swap a
partition's small files for the merged one in one step. Each partition folder may hold a small
JSON object, `_head.json`, that only the compactor (the log sink) writes, each time with one
atomic PUT: `merged` names the live merged files, `replaced` the files a merge replaced (with the
time it did). A reader takes the head first and lists the folder after it:

* a `part-*.parquet` file is live unless the head says it was replaced;
* a `merge-*.parquet` file is live only once the head names it.

A merge therefore is: write the merged file (no reader sees it yet), PUT the new head (the commit:
readers switch from the parts to the merged file at once), and `grace` seconds later delete the
replaced files and drop them from the head. A reader that took the head before a commit keeps
reading the parts, which stay until the grace has passed; it only has to list the folder within
the grace after taking the head (LogStore checks, and reads again if not), and a file deleted
under a slower scan makes the scan fail and read again, never answer with rows missing.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from pydantic import BaseModel, ConfigDict, Field

HEAD = "_head.json"
PART_PREFIX = "part-"
MERGE_PREFIX = "merge-"
SUFFIX = ".parquet"
_STAMP = re.compile(r"^(?:part|merge)-(\d+)-")


def written_ns(name: str) -> int:
    """The write time (ns) a data file's name carries; 0 for a name without one."""
    match = _STAMP.match(name)
    return int(match.group(1)) if match else 0


def is_data_file(name: str) -> bool:
    return name.endswith(SUFFIX) and name.startswith((PART_PREFIX, MERGE_PREFIX))


class PartitionHead(BaseModel):
    """The head object of one partition folder (names are file names inside the folder)."""

    model_config = ConfigDict(extra="forbid")

    merged: list[str] = Field(default_factory=list, description="merged files readers may read")
    replaced: dict[str, float] = Field(
        default_factory=dict, description="file -> unix time a merge replaced it; deleted after the grace"
    )

    def live(self, names: Iterable[str]) -> list[str]:
        """The data files among `names` (a listing taken after this head) that a reader reads, in write order."""
        merged = set(self.merged)
        chosen = [
            name
            for name in names
            if is_data_file(name) and name not in self.replaced and (name.startswith(PART_PREFIX) or name in merged)
        ]
        return sorted(chosen, key=lambda name: (written_ns(name), name))

    def after_merge(self, parts: Iterable[str], merged: str, now: float) -> PartitionHead:
        """The head that commits `merged` as the replacement of `parts`."""
        parts = set(parts)
        return PartitionHead(
            merged=sorted({*(m for m in self.merged if m not in parts), merged}),
            replaced={**self.replaced, **dict.fromkeys(sorted(parts), now)},
        )

    def expired(self, now: float, grace_s: float) -> list[str]:
        """Replaced files no reader can still need (replaced more than `grace_s` ago)."""
        return sorted(name for name, when in self.replaced.items() if now - when >= grace_s)

    def orphans(self, names: Iterable[str], now_ns: int, grace_s: float) -> list[str]:
        """Merged files no head ever committed (a merge that crashed before its commit), once old."""
        known = set(self.merged) | set(self.replaced)
        return sorted(
            name
            for name in names
            if name.startswith(MERGE_PREFIX) and name not in known and now_ns - written_ns(name) >= grace_s * 1e9
        )

    def without(self, deleted: Iterable[str]) -> PartitionHead:
        gone = set(deleted)
        return PartitionHead(
            merged=[m for m in self.merged if m not in gone],
            replaced={n: t for n, t in self.replaced.items() if n not in gone},
        )
