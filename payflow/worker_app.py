"""The app as the worker runs it: `payflow worker`, or `faust -A payflow.worker_app worker -l info`.

payflow.app declares the Faust app; the agents (agents/), the state tables (tables/) and the
web views (payflow/web.py) declare themselves on it, so this module, the composition root,
imports them for that side effect. Nothing below it imports upward (docs/architecture.md,
"Layers").
"""
from __future__ import annotations

from payflow import runtime
from payflow.app import app, settings
import payflow.tables.definitions  # noqa: F401 - the state tables first: the agents read them
import payflow.agents.erasure  # noqa: F401
import payflow.agents.fraud_labels  # noqa: F401
import payflow.agents.pipeline  # noqa: F401
import payflow.web  # noqa: F401

# the runtime's timers, after everything else is declared: the stall guard (faust#596), the
# outage and stall logs, readiness
runtime.attach(app, raw_topic=settings.topics.raw, settings=settings)

__all__ = ["app", "settings"]
