"""The package's import layers: what each part may import (README "Layout").

Read from the source (every `import`, function-level ones included), so a violation fails here
before it becomes a cycle or drags Kafka into the functional core.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# part -> prefixes it must never import
FORBIDDEN: dict[str, tuple[str, ...]] = {
    "rules": ("worker", "kafka", "confluent_kafka", "fastavro", "prometheus_client"),
    "worker.errors": ("worker.",),
    "worker.config": ("worker.cli", "worker.runtime", "worker.replay", "worker.processing"),
    "worker.kafka": (
        "worker.serde",
        "worker.state",
        "worker.processing",
        "worker.runtime",
        "worker.replay",
        "worker.cli",
        "worker.observability",
    ),
    "worker.serde": (
        "worker.kafka",
        "worker.state",
        "worker.processing",
        "worker.runtime",
        "worker.replay",
        "worker.cli",
        "kafka",
    ),
    "worker.state": (
        "worker.kafka",
        "worker.processing",
        "worker.runtime",
        "worker.replay",
        "worker.cli",
        "kafka",
    ),
    "worker.observability": ("worker.processing", "worker.runtime", "worker.replay", "worker.cli"),
    "worker.processing": ("worker.runtime", "worker.replay", "worker.cli"),
    "worker.runtime": ("worker.replay", "worker.cli"),
    "worker.replay": ("worker.runtime", "worker.cli"),
    "worker.offline": (
        "worker.kafka",
        "worker.runtime",
        "worker.replay",
        "worker.cli",
        "worker.processing",
        "kafka",
    ),
    # Test harnesses (test brokers, testcontainers, Docker) live in tests/, never the package.
    "worker": ("tests", "testcontainers", "docker", "hypothesis", "pytest"),
}


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def _sources() -> list[Path]:
    return sorted([*(ROOT / "rules").rglob("*.py"), *(ROOT / "worker").rglob("*.py")])


def _matches(name: str, prefix: str) -> bool:
    return name == prefix.rstrip(".") or name.startswith(
        prefix if prefix.endswith(".") else prefix + "."
    )


@pytest.mark.parametrize("path", _sources(), ids=lambda p: str(p.relative_to(ROOT)))
def test_module_respects_the_layers(path: Path) -> None:
    module = _module_name(path)
    broken = sorted(
        f"{module} imports {name} ({part} must not import {prefix})"
        for part, prefixes in FORBIDDEN.items()
        if _matches(module, part)
        for name in _imports(path)
        for prefix in prefixes
        if _matches(name, prefix)
    )
    assert not broken, "\n".join(broken)


def test_the_rules_and_every_part_have_sources_to_check() -> None:
    names = {_module_name(p) for p in _sources()}
    for part in FORBIDDEN:
        assert any(_matches(name, part) for name in names), f"no module in {part}"


def test_a_violation_is_seen(tmp_path: Path) -> None:
    """The checker itself: an import of worker from rules is found."""
    source = tmp_path / "bad.py"
    source.write_text("import os\nfrom worker.kafka import clients\ndef f():\n    import kafka\n")
    assert _imports(source) == {"os", "worker.kafka", "kafka"}
    assert _matches("worker.kafka", "worker") and not _matches("workers", "worker")
