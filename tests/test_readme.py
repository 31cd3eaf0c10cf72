"""The README matches the code: its Python snippet runs (against real local nodes), every
option it names exists, its authorisation-upload figure is the benchmark's, and no file
points at documents a reader of the repository does not have."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from cache_service import healthcheck
from client_sdk.cli import build_parser, main
from client_sdk.local_nodes import start_nodes, stop_nodes

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def section(title: str) -> str:
    start = README.index(f"\n## {title}\n")
    end = README.find("\n## ", start + 1)
    return README[start : end if end != -1 else None]


def code_blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", text, flags=re.DOTALL)


@pytest.fixture(scope="module")
def node_urls() -> Iterator[list[str]]:
    base = Path(tempfile.mkdtemp(prefix="sc-readme-", dir="/tmp"))
    nodes = asyncio.run(start_nodes(base, 3))
    try:
        yield [n.url for n in nodes]
    finally:
        asyncio.run(stop_nodes(nodes))
        shutil.rmtree(base, ignore_errors=True)


def test_the_python_snippet_runs(node_urls: list[str], tmp_path: Path) -> None:
    """ "From Python", verbatim, with ~ a fresh directory holding an account made by the
    README's own `account init`."""
    [snippet] = code_blocks(section("From Python"), "python")
    nodes = [arg for url in node_urls for arg in ("--node", url)]
    home = tmp_path / ".sc-phone"
    assert main(["--home", str(home), "account", "init", *nodes, "--threshold", "2"]) == 0
    env = {**os.environ, "HOME": str(tmp_path), "PYTHONPATH": str(ROOT)}
    ran = subprocess.run(
        [sys.executable, "-c", snippet],
        check=False,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert ran.returncode == 0, ran.stderr
    first = ran.stdout.splitlines()[0]  # report.stored, then each node's state
    assert first.startswith("1 {"), ran.stdout
    for url in node_urls:
        assert f"'{url}': <NodeState.OK: 'ok'>" in first, ran.stdout


def _options(parser: argparse.ArgumentParser) -> Iterator[str]:
    for action in parser._actions:
        yield from action.option_strings
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from _options(sub)


def test_every_option_the_docs_name_exists() -> None:
    # the statecache command's, and the health check's the deploy docs name
    known = set(_options(build_parser())) | set(_options(healthcheck.build_parser()))
    unknown = []
    for path in [ROOT / "README.md", *sorted(ROOT.glob("docs/*.md"))]:
        prose = re.sub(r"```python\n.*?```", "", path.read_text(), flags=re.DOTALL)
        named = set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", prose))
        assert named or path.name != "README.md", "the README names no option"
        unknown += [f"{path.name}: {option}" for option in sorted(named - known)]
    assert unknown == []


def test_one_figure_for_the_authorisation_upload() -> None:
    results = json.loads((ROOT / "docs/bench/results.json").read_text())
    [figure] = {
        row["authoriser_upload_bytes"]
        for row in results["onboarding"]
        if row["design"] == "statecache"
    }
    lines = [line for line in README.splitlines() if re.search(r"(?i)authoris", line)]
    numbers = {
        int(n.replace(",", ""))
        for line in lines
        for n in re.findall(r"\b\d{1,3}(?:,\d{3})+\b|\b\d{4,}\b", line)
    }
    assert numbers == {figure}
    table = [line for line in README.splitlines() if "| statecache |" in line]
    assert table and all(f"| {figure:,} B |" in line for line in table)
    assert "KiB for three nodes" not in README


def test_no_pointer_to_documents_outside_the_repository() -> None:
    """Nothing names what a reader of a clone does not have."""
    # (the sibling directory spelt in pieces: this test names it, it never reads it)
    sibling = "../" + "sha" + "red"
    phrases = ("project brief", "the brief", "original architecture", sibling)
    files = [ROOT / "README.md", ROOT / "Makefile", *ROOT.glob("docs/*.md")]
    files += [p for d in ("pre", "cache_service", "client_sdk") for p in (ROOT / d).rglob("*.py")]
    found = [
        f"{path.relative_to(ROOT)}: {phrase}"
        for path in files
        for phrase in phrases
        if phrase in path.read_text().lower()
    ]
    assert found == []
