"""Keep the lock files free of card-number-shaped digits: `make lock` runs this after uv.

A sha256 in hex now and then holds a run of decimal digits that is a plausible, Luhn-valid
card number: payflow's own detector (and any PCI scanner) would flag the repository. Such a
hash is replaced by the sha512 (else sha384) of the same file, read from PyPI, which pip and
uv accept alike under --require-hashes; the artifact pinned is the same.

    python scripts/lock_hashes.py requirements/lock.txt [...]
"""
from __future__ import annotations

import hashlib
import json
import re
import sys
import urllib.request
from pathlib import Path

from payflow.stages.cards import find_pans

PIN = re.compile(r"^([A-Za-z0-9_.\-]+)==([^\s\\]+)")
HASH = re.compile(r"--hash=sha256:([0-9a-f]{64})")


def files_by_sha256(name: str) -> dict[str, str]:
    """sha256 -> URL of every file of `name` on PyPI (the simple API, PEP 691)."""
    request = urllib.request.Request(f"https://pypi.org/simple/{name}/",
                                     headers={"Accept": "application/vnd.pypi.simple.v1+json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        project = json.load(response)
    return {f["hashes"]["sha256"]: f["url"] for f in project["files"] if "sha256" in f["hashes"]}


def other_digest(url: str) -> str:
    with urllib.request.urlopen(url, timeout=300) as response:
        data = response.read()
    for algorithm in ("sha512", "sha384"):
        digest = hashlib.new(algorithm, data).hexdigest()
        if not find_pans(digest):
            return f"{algorithm}:{digest}"
    raise SystemExit(f"every digest of {url} holds a card-shaped number")


def clean(path: Path) -> int:
    lines, pin, replaced = path.read_text().splitlines(keepends=True), None, 0
    for i, line in enumerate(lines):
        found = PIN.match(line)
        if found:
            pin = found.groups()
        digest = HASH.search(line)
        if digest and find_pans(digest.group(1)):
            urls = files_by_sha256(pin[0])
            lines[i] = line.replace(f"sha256:{digest.group(1)}", other_digest(urls[digest.group(1)]))
            replaced += 1
    path.write_text("".join(lines))
    return replaced


if __name__ == "__main__":
    for arg in sys.argv[1:]:
        print(f"{arg}: {clean(Path(arg))} card-shaped sha256 hash(es) replaced")
