"""The partition head of logs on an object store: which files a reader reads, what a merge commits."""

from __future__ import annotations

from monitoring.log_head import PartitionHead, written_ns

PARTS = ["part-100-aa.parquet", "part-200-bb.parquet", "part-300-cc.parquet"]


def test_parts_are_live_until_replaced_and_merged_files_only_once_committed() -> None:
    empty = PartitionHead()
    listing = [*PARTS, "merge-400-dd.parquet", "_head.json", "notes.txt"]
    assert empty.live(listing) == PARTS  # an uncommitted merge and other objects are not read
    head = empty.after_merge(PARTS[:2], "merge-400-dd.parquet", now=1000.0)
    assert head.live(listing) == ["part-300-cc.parquet", "merge-400-dd.parquet"]  # in write order
    assert head.replaced == {PARTS[0]: 1000.0, PARTS[1]: 1000.0}
    again = head.after_merge(["merge-400-dd.parquet", PARTS[2]], "merge-500-ee.parquet", now=1010.0)
    assert again.merged == ["merge-500-ee.parquet"]
    assert again.live([*listing, "merge-500-ee.parquet"]) == ["merge-500-ee.parquet"]


def test_replaced_files_expire_after_the_grace_and_uncommitted_merges_are_orphans() -> None:
    head = PartitionHead().after_merge(PARTS[:2], "merge-400-dd.parquet", now=1000.0)
    assert head.expired(now=1059.0, grace_s=60) == []
    assert head.expired(now=1060.0, grace_s=60) == PARTS[:2]
    listing = [*PARTS, "merge-400-dd.parquet", "merge-450-ff.parquet"]
    assert head.orphans(listing, now_ns=450 + int(59e9), grace_s=60) == []
    assert head.orphans(listing, now_ns=450 + int(60e9), grace_s=60) == ["merge-450-ff.parquet"]
    tidied = head.without(PARTS[:2])
    assert tidied.replaced == {} and tidied.merged == ["merge-400-dd.parquet"]
    assert written_ns("part-123-x.parquet") == 123 and written_ns("other.parquet") == 0
