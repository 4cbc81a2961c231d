"""This process's connection to Ray, made only where Corral asks for it.

Ray connects on its own when any of its calls runs unconnected ("auto-init"): after `ray.shutdown()`
a Serve handle's background metrics thread in the driver (left by `corral up`'s restore call) then
connected to the head being stopped, or, once it was gone, started a whole local cluster in the
driver, dashboard on port 8265 included; the next `corral up` failed with a wrong cluster id or a
taken port (seen in CI). Connecting through here turns that off for the process.
"""

from __future__ import annotations

import logging

from deployments.ray_private import turn_off_auto_connect


def connect(address: str) -> None:
    """Connect to the cluster at `address` ("auto": the local head), unless already connected."""
    import ray

    turn_off_auto_connect()
    if ray.is_initialized():
        return
    ray.init(address=address, logging_level=logging.ERROR, log_to_driver=False, namespace="corral")


def disconnect() -> None:
    """Drop this process's connection (a no-op when there is none)."""
    import ray

    ray.shutdown()
