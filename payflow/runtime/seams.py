"""The fence around payflow's seams into library internals: a version check and `replace`.

The runtime replaces private methods of Faust and aiokafka classes and reads private state of
Faust, mode, aiokafka and prometheus_client objects (each such line is marked
`# noqa: SLF001`). Those names are not an API: they were read against the versions below,
and the worker and every command refuse to start on any other (`check_versions`), naming
the files to re-audit.
`replace` puts a seam on a class only if the method it replaces is there, and keeps the
original. Nothing here imports the libraries themselves.
"""
from __future__ import annotations

import inspect
from importlib import metadata
from typing import Any, Callable, Mapping

# distribution -> the version payflow/runtime was audited against (setup.cfg allows it, the lock
# files pin it; mode-streaming is Faust's dependency, as installed at the audit)
AUDITED_VERSIONS: dict[str, str] = {
    "faust-streaming": "0.15.3",
    "mode-streaming": "0.7.1",
    "aiokafka": "0.14.0",
    "prometheus-client": "0.26.0",
}

# what to read again when a distribution changes: every line marked `# noqa: SLF001` there
RE_AUDIT: dict[str, str] = {
    "faust-streaming": "payflow/runtime/ (fetch.py, take.py, commit_offsets.py, worker.py, monitor.py, "
                       "stall_guard.py, health.py, internals.py, tables.py, landing_fence.py)",
    "mode-streaming": "payflow/runtime/fetch.py and payflow/runtime/take.py (mode's Service internals)",
    "aiokafka": "payflow/runtime/ (fetch.py, worker.py, health.py, internals.py, landing_fence.py)",
    "prometheus-client": "payflow/runtime/prometheus.py",
}


class UnauditedVersion(SystemExit):
    """A library version the seams were not written against: the worker does not start.
    (A SystemExit: the message is printed without a traceback and the exit code is 1.)"""


class MissingSeam(RuntimeError):
    """A method payflow replaces or calls is not on the class any more."""


def check_versions(audited: Mapping[str, str] = AUDITED_VERSIONS,
                   version: Callable[[str], str] | None = None) -> None:
    """Refuse (UnauditedVersion) unless every audited distribution is installed at its version."""
    version = version or metadata.version
    wrong = []
    for dist, expected in audited.items():
        try:
            installed = version(dist)
        except metadata.PackageNotFoundError:
            installed = "not installed"
        if installed != expected:
            wrong.append(f"{dist} {installed} is installed, payflow's runtime was written against {expected}: "
                         f"re-audit {RE_AUDIT.get(dist, 'payflow/runtime/')}")
    if wrong:
        raise UnauditedVersion(
            "payflow refuses to start: " + "; ".join(wrong)
            + ". Every private access there is marked `# noqa: SLF001`; once they are checked against the "
            "installed version, update AUDITED_VERSIONS in payflow/runtime/seams.py (and setup.cfg and the lock files).")


_originals: dict[tuple[type, str], Any] = {}


def _where(cls: type, name: str) -> str:
    return f"{cls.__module__}.{cls.__qualname__}.{name}"


def require(cls: type, *names: str) -> None:
    """Fail loudly (MissingSeam) unless cls has each of `names` (the runtime calls them)."""
    for name in names:
        try:
            inspect.getattr_static(cls, name)
        except AttributeError:
            raise MissingSeam(f"payflow seam: {_where(cls, name)} is gone in the installed version; "
                              "payflow/runtime/ must be re-audited against it") from None


def replace(cls: type, name: str, new: Callable) -> Callable:
    """Put `new` on `cls` as `name` and return the original, which stays available as
    `original(cls, name)`. Refuses (MissingSeam) if cls has no such method; installing
    the same replacement again changes nothing."""
    require(cls, name)
    current = inspect.getattr_static(cls, name)
    if (cls, name) not in _originals:
        if not callable(current):
            raise MissingSeam(f"payflow seam: {_where(cls, name)} is no longer a method; "
                              "payflow/runtime/ must be re-audited against the installed version")
        _originals[(cls, name)] = current
    elif current is not new and getattr(current, "_payflow_seam", False):
        raise MissingSeam(f"payflow seam: {_where(cls, name)} already holds another payflow replacement")
    new._payflow_seam = True  # type: ignore[attr-defined]
    setattr(cls, name, new)
    return _originals[(cls, name)]


def original(cls: type, name: str) -> Callable:
    """The library's own method that `replace` put aside (before it: the one on the class)."""
    found = _originals.get((cls, name))
    return found if found is not None else inspect.getattr_static(cls, name)


def installed(cls: type, name: str) -> bool:
    """True if cls.name is a payflow replacement."""
    return getattr(inspect.getattr_static(cls, name, None), "_payflow_seam", False)
