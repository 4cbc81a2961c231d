"""Request bodies for the fraud workload and a check that a system's replies are right."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
import pandas as pd
import pyarrow as pa

from benchmarks.peer import FraudModel
from examples.fraud import FEATURES, make_transactions


def rows(n: int, seed: int = 1) -> pd.DataFrame:
    """`n` transactions, FEATURES only (what a client sends)."""
    return make_transactions(n, seed=seed)[FEATURES]


def records_body(df: pd.DataFrame) -> bytes:
    return orjson.dumps(df.to_dict("records"), option=orjson.OPT_SERIALIZE_NUMPY)


def arrow_body(df: pd.DataFrame) -> bytes:
    table = pa.Table.from_pandas(df, preserve_index=False)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def decode_reply(fmt: str, content: bytes) -> pd.DataFrame:
    if fmt == "arrow":
        return pa.ipc.open_stream(content).read_all().to_pandas()
    return pd.DataFrame(orjson.loads(content))


def check_reply(fmt: str, status: int, content: bytes, df: pd.DataFrame, model: FraudModel) -> str:
    """'ok', or what is wrong with a reply to `df` compared with the model run in-process."""
    if status != 200:
        return f"HTTP {status}: {content[:300]!r}"
    try:
        got = decode_reply(fmt, content)
    except Exception as exc:  # any undecodable reply is a failed check, described
        return f"undecodable {fmt} reply: {exc}"
    missing = {"label", "probabilities", "is_fraud"} - set(got.columns)
    if missing or len(got) != len(df):
        return f"reply has {len(got)} rows and columns {list(got.columns)}; missing {sorted(missing)}"
    label, proba, is_fraud = model(df.to_numpy(np.float64))
    got_proba = np.array([list(p) for p in got["probabilities"]], dtype=np.float64)
    problems: list[Any] = []
    if not np.array_equal(got["label"].to_numpy(np.int64), label):
        problems.append("label")
    if got_proba.shape != proba.shape or not np.allclose(got_proba, proba, atol=1e-5):
        problems.append("probabilities")
    if not np.array_equal(got["is_fraud"].to_numpy(np.int64), is_fraud):
        problems.append("is_fraud")
    return "ok" if not problems else f"differs from in-process onnxruntime in {problems}"
