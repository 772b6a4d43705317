"""What README.md, docs/ and the chart's README name exists in the code: every setting
(PAYFLOW_...), metric (payflow_...), worker endpoint, make target and repository path. A doc
that outlives the code it describes fails here instead of misleading an operator."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", ROOT / "helm" / "payflow" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# where a setting counts as existing: the code that reads it (the chart's schema and the
# tests name settings too, and would keep a removed one alive); PAYFLOW_TEST_* are the tests'
CODE_DIRS = ("payflow", "agents", "tables", "scripts", "helm/payflow/templates")
TEST_DIRS = ("tests",)
CODE_SUFFIXES = {".py", ".sh", ".yaml", ".yml", ".json", ".tpl", ".txt"}
ENDPOINT_ROOTS = ("livez", "readyz", "healthz", "metrics", "warehouse")
PATH_ROOTS = ("payflow", "agents", "tables", "tests", "scripts", "docs", "helm", "sql", "requirements", ".ci")
METRIC_SUFFIXES = ("_total", "_bucket", "_count", "_sum", "_created")


def doc_text() -> dict[str, str]:
    return {str(p.relative_to(ROOT)): p.read_text() for p in DOCS if p.exists()}


def code_text(folders: tuple[str, ...] = CODE_DIRS) -> str:
    parts = [(ROOT / "Makefile").read_text(), (ROOT / "Dockerfile").read_text()]
    for folder in folders:
        for path in (ROOT / folder).rglob("*"):
            if path.is_file() and path.suffix in CODE_SUFFIXES and "__pycache__" not in path.parts \
                    and path.name != Path(__file__).name:
                parts.append(path.read_text(errors="replace"))
    return "\n".join(parts)


def named(pattern: str, docs: dict[str, str]) -> dict[str, set[str]]:
    """token -> the docs naming it."""
    found: dict[str, set[str]] = {}
    for doc, text in docs.items():
        for match in re.finditer(pattern, text):
            found.setdefault(match.group(1), set()).add(doc)
    return found


def missing_settings(docs: dict[str, str], code: str, tests: str = "") -> dict[str, set[str]]:
    return {name: where for name, where in named(r"\b(PAYFLOW_[A-Z0-9_]*[A-Z0-9])\b", docs).items()
            if not re.search(rf"\b{name}\b", tests if name.startswith("PAYFLOW_TEST_") else code)}


def missing_metrics(docs: dict[str, str], metrics_source: str) -> dict[str, set[str]]:
    out = {}
    for name, where in named(r"\b(payflow_[a-z0-9_]*[a-z0-9])\b", docs).items():
        base = next((name[: -len(s)] for s in METRIC_SUFFIXES if name.endswith(s)), name)
        if f'"{name}"' not in metrics_source and f'"{base}"' not in metrics_source:
            out[name] = where
    return out


def routes(web_source: str) -> set[str]:
    return set(re.findall(r'@app\.page\("([^"]+)"\)', web_source))


def missing_endpoints(docs: dict[str, str], served: set[str]) -> dict[str, set[str]]:
    pattern = r"(?<![\w./-])(/(?:" + "|".join(ENDPOINT_ROOTS) + r")(?:/[a-z_]+)*)(?![\w.-])"
    return {path: where for path, where in named(pattern, docs).items() if path not in served}


def make_targets(makefile: str) -> set[str]:
    return {t for line in makefile.splitlines() if (m := re.match(r"^([a-z][\w.-]*(?: [a-z][\w.-]*)*)\s*:(?!=)", line))
            for t in m.group(1).split()}


def missing_targets(docs: dict[str, str], targets: set[str]) -> dict[str, set[str]]:
    return {t: where for t, where in named(r"`make ([a-z][\w-]*)", docs).items() if t not in targets}


def missing_paths(docs: dict[str, str]) -> dict[str, set[str]]:
    pattern = r"(?<![\w./-])((?:" + "|".join(re.escape(r) for r in PATH_ROOTS) + r")/[\w./-]*[\w])"
    out = {}
    for path, where in named(pattern, docs).items():
        if any(ch in path for ch in "*{}") or "/" not in path:
            continue
        if not (ROOT / path).exists():
            out[path] = where
    return out


@pytest.fixture(scope="module")
def docs() -> dict[str, str]:
    return doc_text()


def test_every_setting_named_in_the_docs_is_read_by_the_code(docs):
    assert missing_settings(docs, code_text(), code_text(TEST_DIRS)) == {}


def test_every_metric_named_in_the_docs_is_defined(docs):
    assert missing_metrics(docs, (ROOT / "payflow" / "metrics.py").read_text()) == {}


def test_every_endpoint_named_in_the_docs_is_served(docs):
    assert missing_endpoints(docs, routes((ROOT / "payflow" / "web.py").read_text())) == {}


def test_every_make_target_named_in_the_docs_exists(docs):
    assert missing_targets(docs, make_targets((ROOT / "Makefile").read_text())) == {}


def test_every_repository_path_named_in_the_docs_exists(docs):
    assert missing_paths(docs) == {}


def test_the_checks_see_a_removed_setting_endpoint_metric_target_and_path():
    """Each check fails on a doc naming something the code lacks."""
    doc = {"doc.md": "Set `PAYFLOW_NO_SUCH_SETTING`; GET `/readyz` and `/warehouse/nowhere`; "
                     "watch `payflow_no_such_metric_total`; run `make nothing`; see payflow/no_such.py."}
    assert set(missing_settings(doc, "PAYFLOW_OTHER")) == {"PAYFLOW_NO_SUCH_SETTING"}
    assert set(missing_endpoints(doc, {"/readyz"})) == {"/warehouse/nowhere"}
    assert set(missing_endpoints(doc, set())) == {"/readyz", "/warehouse/nowhere"}
    assert set(missing_metrics(doc, 'Counter("payflow_other")')) == {"payflow_no_such_metric_total"}
    assert set(missing_metrics(doc, 'Counter("payflow_no_such_metric")')) == set()
    assert set(missing_targets(doc, {"test"})) == {"nothing"}
    assert set(missing_paths(doc)) == {"payflow/no_such.py"}
