"""Corral: serve ML pipelines on Ray. `client = corral.Client()` is where to start."""

from cluster.sdk import Assay, BatchFailed, BatchResult, Client, CorralAPIError, Pipeline
from explain.explanation import Explanation

__all__ = ["Assay", "BatchFailed", "BatchResult", "Client", "CorralAPIError", "Explanation", "Pipeline"]
__version__ = "0.1.0"
