"""The app as the worker runs it: `payflow worker`, or `faust -A payflow.worker_app worker -l info`.

payflow.app declares the Faust app; the agents (agents/), the state tables (tables/) and the
web views (payflow/web.py) declare themselves on it, so this module, the composition root,
imports them for that side effect. Nothing below it imports upward (docs/architecture.md,
"Layers").
"""
from __future__ import annotations

from payflow.app import app, settings
import payflow.tables.definitions  # noqa: F401 - the state tables first: the agents read them
import payflow.agents.erasure  # noqa: F401
import payflow.agents.pipeline  # noqa: F401
import payflow.web  # noqa: F401

__all__ = ["app", "settings"]
