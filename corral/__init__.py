"""Corral: serve ML pipelines on Ray. `client = corral.Client()` is where to start."""

from cluster.sdk import Assay, Client, CorralAPIError, Pipeline

__all__ = ["Assay", "Client", "CorralAPIError", "Pipeline"]
__version__ = "0.1.0"
