"""Corral: serve ML pipelines on Ray. `client = corral.Client()` is where to start."""

from cluster.sdk import Assay, Client, CorralAPIError, Pipeline
from explain.explanation import Explanation

__all__ = ["Assay", "Client", "CorralAPIError", "Explanation", "Pipeline"]
__version__ = "0.1.0"
