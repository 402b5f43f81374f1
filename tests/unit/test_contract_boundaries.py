"""Subjects are written and taken apart only in ``contract.py``.

The check reads the source of libs/ and services/ (the syntax tree, not the text, so
docstrings and comments may still show a subject) and reports, outside contract.py:

- a string literal that starts a subject of one of the contract's streams (``scan.request.``…);
- a string literal with a KV or object-store internal subject (``$KV.``, ``$O.``);
- a dot-split or dot-count of something named like a subject (``msg.subject.split(".")``).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

from scanfleet.common import contract

ROOT = Path(__file__).resolve().parents[2]
CONTRACT = ROOT / "libs" / "common" / "scanfleet" / "common" / "contract.py"
FAMILIES = tuple(
    subject.removesuffix(">")
    for stream in contract.STREAMS
    for subject in stream.subjects or []
    if subject.startswith(f"{contract.SUBJECT_ROOT}.")
)
INTERNAL_PREFIXES = ("$KV.", "$O.")
DOT_METHODS = frozenset({"split", "rsplit", "count", "partition", "rpartition"})


def _docstrings(tree: ast.AST) -> set[int]:
    """ids of the constants that are docstrings or bare string statements."""
    return {
        id(node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)
    }


def _literal_violation(text: str) -> str | None:
    if text.startswith(FAMILIES):
        return f"subject literal {text!r}"
    if any(prefix in text for prefix in INTERNAL_PREFIXES):
        return f"internal subject literal {text!r}"
    return None


def _is_dot(node: ast.expr) -> bool:
    return isinstance(node, ast.Constant) and node.value == "."


def violations(source: str, name: str = "<snippet>") -> Iterator[str]:
    """Every place in ``source`` that builds or parses a subject by hand."""
    tree = ast.parse(source, name)
    docs = _docstrings(tree)
    for node in ast.walk(tree):
        # The literal parts of an f-string are Constants too, so f"scan.request.{pool}" is one.
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs:
            problem = _literal_violation(node.value)
            if problem:
                yield f"{name}:{node.lineno}: {problem}"
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in DOT_METHODS
            and node.args
            and _is_dot(node.args[0])
            and "subject" in ast.unparse(node.func.value).lower()
        ):
            yield f"{name}:{node.lineno}: dot-parse of a subject: {ast.unparse(node)}"


def sources() -> list[Path]:
    files = sorted((ROOT / "libs").rglob("*.py")) + sorted((ROOT / "services").rglob("*.py"))
    return [f for f in files if f != CONTRACT]


def test_the_scan_covers_the_code() -> None:
    names = {f.relative_to(ROOT).as_posix() for f in sources()}
    assert "libs/common/scanfleet/common/bus.py" in names
    assert "services/janitor/scanfleet/janitor/housekeeping.py" in names
    assert "libs/common/scanfleet/common/contract.py" not in names
    assert set(FAMILIES) == {"scan.request.", "scan.assign.", "scan.event.", "scan.dlq."}


def test_no_subject_is_built_or_parsed_outside_the_contract() -> None:
    found = [v for f in sources() for v in violations(f.read_text(), f.relative_to(ROOT).as_posix())]
    assert found == [], "use the builders and parsers of scanfleet.common.contract:\n" + "\n".join(found)


@pytest.mark.parametrize(
    "snippet",
    [
        'SUB = "scan.event.*.completed"',
        'sub = f"scan.request.{pool}.{task}"',
        'sub = "scan.dlq.>"',
        'key = f"$KV.{bucket}.{task_id}"',
        'chunk = f"$O.{bucket}.C.{nuid}"',
        "task_id = msg.subject.split('.')[2]",
        'task_id = subject.rsplit(".", 1)[-1]',
        'ok = subject.count(".") >= 3',
        'head, _, rest = original_subject.partition(".")',
    ],
)
def test_the_check_catches_hand_made_subjects(snippet: str) -> None:
    assert list(violations(snippet)), snippet


@pytest.mark.parametrize(
    "snippet",
    [
        'def f():\n    """Publishes to ``scan.event.<task>.<kind>``."""',
        'prefs = {"scan.enable_utf8_output": "no"}',
        'labels = text.rstrip(".").split(".")',
        'short = host.fqdn.split(".")[0]',
        "sub = contract.event_subject(task_id, EventKind.EXPORTED)",
        'version = "1.2.3".split(".")',
    ],
)
def test_the_check_leaves_other_strings_alone(snippet: str) -> None:
    assert list(violations(snippet)) == [], snippet
