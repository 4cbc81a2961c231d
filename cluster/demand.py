"""What pending pipelines need, put where Ray's autoscaler looks: one placement group per pipeline.

A pending pipeline has nothing submitted to Serve, so no actor of it asks Ray for anything and an
autoscaler would never add the node it waits for. A placement group with the pipeline's startup
bundles is a demand the autoscaler sees (and `ray status` shows). It is created even when Ray runs
no autoscaler: then it stays pending, harmless, and a node added by hand takes it at once.

It is removed before the pipeline deploys, or its reservation would hold the very resources the
replicas need. Created by the control replica (a detached actor), it goes when that replica goes.
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger("corral.demand")
PREFIX = "corral-pending:"


class PendingDemand:
    """The placement groups of pending pipelines, by application name. Calls block (GCS RPCs):
    run them in a worker thread."""

    def __init__(self) -> None:
        self.groups: dict[str, Any] = {}

    def ask(self, app: str, bundles: list[dict[str, float]]) -> None:
        """Show the autoscaler what `app` needs to start (once; never waits for the group to place)."""
        if app in self.groups or not bundles:
            return
        from ray.util.placement_group import placement_group

        # PACK: as few nodes as the bundles fit on, but spread when they must (as Serve places replicas).
        self.groups[app] = placement_group(bundles, strategy="PACK", name=f"{PREFIX}{app}")
        log.info("%s pending: asked Ray for %s", app, bundles)

    def drop(self, app: str) -> None:
        group = self.groups.pop(app, None)
        if group is None:
            return
        from ray.util.placement_group import remove_placement_group

        try:
            remove_placement_group(group)
        except Exception:  # already gone (its node died, or Ray restarted): nothing left to release
            log.warning("could not remove the placement group of %s", app, exc_info=True)
