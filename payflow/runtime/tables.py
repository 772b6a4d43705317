"""The Faust table base class for payflow's state tables: Faust's private changelog hooks,
set here so that tables/ touches no Faust internals.

Faust's Table logs every key change to a compacted changelog. payflow's tables log one
record per partition per batch (tables/changelog.py) to a changelog with
cleanup.policy=delete and a retention of the state window plus a day, as Kafka Streams does
for window stores: Faust exposes no public setting for that policy, only these attributes
and the `_new_changelog_topic` hook (checked to exist, faust-streaming 0.15.3).
"""
from __future__ import annotations

from typing import Any

import faust

from payflow.runtime.seams import require


class RetainedChangelogTable(faust.Table):
    """A faust.Table whose changelog is deleted by retention, not compacted."""

    def __init__(self, *args: Any, retention_seconds: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._changelog_compacting = False  # noqa: SLF001 - Faust's Table settings for its changelog
        self._changelog_deleting = True  # noqa: SLF001
        self._retention_seconds = retention_seconds

    def _new_changelog_topic(self, *, retention=None, compacting=None, deleting=None):  # noqa: SLF001 - Faust's hook
        return super()._new_changelog_topic(  # noqa: SLF001
            retention=self._retention_seconds, compacting=False, deleting=True)


require(faust.Table, "_new_changelog_topic")
