"""What the `statecache` command prints.

A command returns a `Result`: named fields, named tables and text-only notes. It is shown
either as aligned text (fields, then each table, then the nodes that were not ok: suspect,
unavailable and behind nodes in tables of their own) or,
with `--json`, as one JSON object (`{**fields, table_name: [row, ...], "nodes": {URL:
{"state", "code", "message"}}}`), so scripts and people read the same data. Text that came
from a node or a certificate is shown with invisible and bidi characters escaped.
`Progress` draws a bar on stderr while long work runs, and only when stderr is a terminal.
"""

from __future__ import annotations

import json
import sys
import time
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import TracebackType
from typing import TextIO

from .outcomes import NodeOutcome, NodeState

__all__ = [
    "Cell",
    "Progress",
    "Result",
    "Table",
    "error_json",
    "escape",
    "human_bytes",
    "timestamp",
    "to_json",
    "to_text",
]

Scalar = str | int | float | bool | None
Cell = Scalar | list[str] | list[int]


@dataclass(frozen=True)
class Table:
    """Rows of one kind; `columns` are the row keys, in display order. Text shows at most
    `text_rows` rows (None: all); JSON always has every row."""

    columns: Sequence[str]
    rows: Sequence[Mapping[str, Cell]]
    text_rows: int | None = None
    empty: str | None = "none"  # text shown for no rows; None leaves the table out


# A read that finished but could not deliver everything (`"complete": false`): distinct
# from 1, a command that failed, and 2, a usage error.
EXIT_INCOMPLETE = 3


@dataclass(frozen=True)
class Result:
    fields: Mapping[str, Cell] = field(default_factory=dict)
    tables: Mapping[str, Table] = field(default_factory=dict)
    notes: Sequence[str] = ()  # hints for people; not in JSON
    warnings: Sequence[str] = ()  # printed on stderr (text and JSON alike), one line each
    nodes: Mapping[str, NodeOutcome] = field(default_factory=dict)  # each node's outcome
    status: int = 0  # the exit status: 0, or EXIT_INCOMPLETE for a read that missed something

    def as_json(self) -> dict[str, object]:
        doc: dict[str, object] = dict(self.fields)
        for name, table in self.tables.items():
            doc[name] = [{c: row.get(c) for c in table.columns} for row in table.rows]
        doc["nodes"] = {url: outcome.as_json() for url, outcome in self.nodes.items()}
        return doc


# Text output names the nodes that were not ok, one table per state, worst first: a
# suspect (it answered something false or off the API) is not the same news as a node
# that was down.
NODE_TABLES = {
    NodeState.SUSPECT: "suspect_nodes",
    NodeState.UNAVAILABLE: "unavailable_nodes",
    NodeState.BEHIND: "nodes_behind",
}


def nodes_table(nodes: Mapping[str, NodeOutcome], state: NodeState) -> Table:
    """The nodes in `state`, for text output."""
    rows: list[Mapping[str, Cell]] = [
        {"node": url, "code": o.code and o.code.value, "message": o.message}
        for url, o in nodes.items()
        if o.state is state
    ]
    return Table(("node", "code", "message"), rows, empty=None)


def error_json(code: str, message: str, nodes: Mapping[str, NodeOutcome]) -> str:
    """A failed command with `--json`: one object on stdout."""
    doc = {
        "error": {
            "code": code,
            "message": message,
            "nodes": {url: o.as_json() for url, o in nodes.items()},
        }
    }
    return json.dumps(doc, indent=2) + "\n"


def to_json(result: Result) -> str:
    return json.dumps(result.as_json(), indent=2) + "\n"


def to_text(result: Result) -> str:
    blocks: list[list[str]] = []
    if result.fields:
        width = max(len(_label(k)) for k in result.fields)
        blocks.append([f"{_label(k):<{width}}  {_cell(v)}" for k, v in result.fields.items()])
    nodes = {name: nodes_table(result.nodes, state) for state, name in NODE_TABLES.items()}
    tables = {**result.tables, **nodes}
    for name, table in tables.items():
        if table.rows or table.empty is not None:
            blocks.append([f"{_label(name)}:", *_table_lines(table)])
    if result.notes:
        blocks.append(list(result.notes))
    return "".join("\n".join(block) + "\n" for block in _spaced(blocks))


def _spaced(blocks: list[list[str]]) -> list[list[str]]:
    return [block if i == 0 else ["", *block] for i, block in enumerate(blocks)]


def _table_lines(table: Table) -> list[str]:
    if not table.rows:
        return [f"  ({table.empty})"]
    shown = table.rows if table.text_rows is None else table.rows[: table.text_rows]
    header = [_label(c).upper() for c in table.columns]
    cells = [[_cell(row.get(c)) for c in table.columns] for row in shown]
    numeric = [all(_is_number(row.get(c)) for row in shown) for c in table.columns]
    widths = [max(len(x) for x in column) for column in zip(header, *cells, strict=True)]
    lines = []
    for line in [header, *cells]:
        padded = [
            text.rjust(w) if right else text.ljust(w)
            for text, w, right in zip(line, widths, numeric, strict=True)
        ]
        lines.append("  " + "  ".join(padded).rstrip())
    hidden = len(table.rows) - len(shown)
    if hidden:
        lines.append(f"  ... and {hidden:,} more (--json lists all)")
    return lines


def _label(key: str) -> str:
    return key.replace("_", " ")


def _is_number(value: Cell) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _cell(value: Cell) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, list):
        return ", ".join(_cell(v) for v in value) or "-"
    return escape(str(value))


_VISIBLE_FORMAT = {"\u200c", "\u200d"}  # ZWNJ, ZWJ: real names need them


def escape(text: str) -> str:
    """`text` for a terminal: control, bidi and other invisible formatting characters
    shown as \\u{XXXX}, so a name cannot disguise itself or reorder a line."""
    return "".join(
        f"\\u{{{ord(ch):04X}}}"
        if unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp") and ch not in _VISIBLE_FORMAT
        else ch
        for ch in text
    )


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def timestamp(seconds: int | None) -> str | None:
    """Unix seconds as ISO 8601 UTC, the form both text and JSON show. Times come from
    nodes and certificates: one no calendar holds (year 10000 and on) is shown as the
    number it is rather than breaking the report."""
    if seconds is None:
        return None
    try:
        return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (ValueError, OverflowError, OSError):
        return f"@{seconds}"


class Progress:
    """A one-line progress bar on `stream` (stderr). Silent unless the stream is a
    terminal, so pipes, logs and `--json` consumers never see it. Without a total it
    counts; with one (an estimate may be exceeded) it fills a bar.

        with Progress("onboard", total=1200) as bar:
            for ...:
                bar.update(done, nbytes)
    """

    WIDTH = 24

    def __init__(
        self,
        label: str,
        *,
        total: int | None = None,
        stream: TextIO | None = None,
        clock: Callable[[], float] = time.monotonic,
        interval: float = 0.1,
    ) -> None:
        self.label = label
        self.total = total
        self.stream = sys.stderr if stream is None else stream
        self.enabled = _is_tty(self.stream)
        self._clock = clock
        self._interval = interval
        self._started = clock()
        self._drawn_at: float | None = None
        self._done = 0
        self._bytes = 0

    def __enter__(self) -> Progress:
        self._draw()
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def update(self, done: int, nbytes: int = 0) -> None:
        self._done, self._bytes = done, nbytes
        now = self._clock()
        if self._drawn_at is None or now - self._drawn_at >= self._interval:
            self._draw()

    def render(self) -> str:
        elapsed = self._clock() - self._started
        tail = f"{human_bytes(self._bytes)}  {elapsed:.1f} s"
        if not self.total:
            return f"{self.label}  {self._done:,} snapshots  {tail}"
        fraction = min(1.0, self._done / self.total)
        filled = round(fraction * self.WIDTH)
        bar = "#" * filled + "-" * (self.WIDTH - filled)
        count = f"{min(self._done, self.total):,}/{self.total:,}"
        return f"{self.label}  [{bar}] {fraction:4.0%}  {count}  {tail}"

    def _draw(self) -> None:
        if not self.enabled:
            return
        self._drawn_at = self._clock()
        self.stream.write("\r" + self.render() + "\x1b[K")
        self.stream.flush()

    def close(self) -> None:
        """Erase the bar: the result printed next says how it went."""
        if self.enabled and self._drawn_at is not None:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
        self._drawn_at = None
        self.enabled = False


def _is_tty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # closed or not a real file
        return False
