"""Helpers the integration tests share: tiny ONNX models, uploads, specs, concurrent calls."""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import onnx
from onnx import TensorProto, helper

SHADOW_STEPS = '''
import time


class Boom:
    """A broken challenger: every call raises."""

    def __init__(self, config):
        pass

    def __call__(self, table):
        raise RuntimeError("the shadow model exploded")


class Slow:
    """A slow challenger: two seconds a call."""

    def __init__(self, config):
        self.seconds = config.get("seconds", 2.0)

    def __call__(self, table):
        time.sleep(self.seconds)
        return table


class Busy:
    """Pure Python work holding the GIL for `seconds` a call (a CPU-bound pre-processing step)."""

    def __init__(self, config):
        self.seconds = config.get("seconds", 0.02)

    def __call__(self, table):
        end = time.perf_counter() + self.seconds
        while time.perf_counter() < end:
            pass
        return table
'''


def scale_model(factor: float, input_name: str = "x", width: int = 1, output_name: str = "y") -> bytes:
    """ONNX model y = x * factor: replies show which model answered."""
    graph = helper.make_graph(
        [helper.make_node("Mul", [input_name, "k"], [output_name])],
        f"scale{factor}",
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, [None, width])],
        [helper.make_tensor_value_info(output_name, TensorProto.FLOAT, [None, width])],
        [helper.make_tensor("k", TensorProto.FLOAT, [1], [factor])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return bytes(model.SerializeToString())


def upload(admin: Any, name: str, data: bytes, tmp: Path) -> str:
    path = tmp / f"{name}-{len(list(tmp.iterdir()))}.onnx"
    path.write_bytes(data)
    onnx.checker.check_model(str(path))
    info = admin.upload_model(name, path)
    return f"{name}:{info['version']}"


def upload_code(admin: Any, name: str, module: str, source: str, tmp: Path) -> str:
    """Upload `source` as module `module`.py under code `name`; returns its reference 'name:version'."""
    path = tmp / f"{module}.py"
    path.write_text(source)
    info = admin.upload_code(name, path)
    return f"{name}:{info['version']}"


def model_step(ref: str) -> dict[str, Any]:
    return {"name": "model", "model": ref, "columns": ["x"], "resources": {"num_cpus": 0.1}}




def fan_out(fn: Any, items: list[Any], workers: int = 16) -> list[Any]:
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(fn, items))


def scrape(port: int) -> str:
    """Ray's Prometheus endpoint on this node."""
    return httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text


def metric_sum(text: str, metric: str, **labels: str) -> float:
    """Sum of the samples of `metric` whose labels include `labels` (Ray prefixes names with ray_)."""
    total = 0.0
    for line in text.splitlines():
        match = re.match(r"^(ray_)?" + re.escape(metric) + r"\{(.*)\} ([0-9.e+-]+)$", line)
        if match and all(f'{k}="{v}"' in match.group(2) for k, v in labels.items()):
            total += float(match.group(3))
    return total
