"""Corral: serve ML pipelines on Ray. `client = corral.Client()` is where to start."""

from cluster.sdk import Client, CorralAPIError, Pipeline

__all__ = ["Client", "CorralAPIError", "Pipeline"]
__version__ = "0.1.0"
