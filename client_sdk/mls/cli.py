"""`statecache mls tree-info`: verify a `ratchet_tree` and describe its shape.

    tree-info --suite N --group-id HEX (--tree-hex HEX | --tree-file PATH) [--json]

prints one JSON object (with or without `--json`: the report is for programs):
`n_leaves`, `tree_hashes` (hex, one per node of the complete tree), `resolutions` (node
indices, one list per node), `parent_hashes_valid`, `signatures_valid` (leaf signatures
with the group id as context), `blank_leaf_ratio`, `blank_parent_ratio` and
`mean_copath_resolution`. `--tree-file` holds the raw encoding or its hex (a raw tree can
never consist of hex digits only: its first node's presence octet is 0x00 or 0x01).
Malformed input exits 1 with one line on stderr, or, with
`--json`, one object `{"error": {"code": "invalid_input", "message", "nodes": {}}}` on
stdout, like every `statecache` command.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, NoReturn

from ..output import error_json
from .errors import MlsDecodeError, UnsupportedCipherSuite
from .hashes import tree_hashes
from .stats import tree_stats
from .suites import CipherSuite, cipher_suite
from .tree import RatchetTree
from .validation import verify_leaf_signatures, verify_parent_hashes

__all__ = ["add_tree_info_arguments", "run_tree_info", "tree_info", "tree_info_main"]

PROG = "statecache mls tree-info"
_HEX_DIGITS = frozenset(b"0123456789abcdefABCDEF")


class _InputError(Exception):
    """Input the command cannot use; its message is the one line printed."""


def add_tree_info_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--suite", required=True, metavar="N", help="cipher suite, 1-7")
    parser.add_argument("--group-id", required=True, metavar="HEX", help="the group id in hex")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--tree-hex", metavar="HEX", help="the ratchet_tree value in hex")
    source.add_argument("--tree-file", metavar="PATH", help="a file with the ratchet_tree value")
    parser.add_argument(
        "--json",
        action="store_true",
        default=argparse.SUPPRESS,  # keeps a `statecache --json mls tree-info` given before
        help="errors too as one JSON object on stdout (the report is JSON either way)",
    )


def tree_info(tree: RatchetTree, suite: CipherSuite, group_id: bytes) -> dict[str, Any]:
    """The report `tree-info` prints, as a JSON-ready dict."""
    stats = tree_stats(tree)
    return {
        "n_leaves": tree.n_leaves,
        "tree_hashes": [h.hex() for h in tree_hashes(tree, suite)],
        "resolutions": tree.resolutions(),
        "parent_hashes_valid": verify_parent_hashes(tree, suite),
        "signatures_valid": verify_leaf_signatures(tree, suite, group_id),
        "blank_leaf_ratio": stats.blank_leaf_ratio,
        "blank_parent_ratio": stats.blank_parent_ratio,
        "mean_copath_resolution": stats.mean_copath_resolution,
    }


def _hex(value: str, what: str) -> bytes:
    try:
        return bytes.fromhex(value)
    except ValueError:
        raise _InputError(f"{what} is not valid hex") from None


def _read_tree_file(path: str) -> bytes:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise _InputError(f"cannot read --tree-file: {exc.strerror or exc}") from None
    text = b"".join(data.split())
    if text and all(c in _HEX_DIGITS for c in text):
        return _hex(text.decode("ascii"), "--tree-file")
    return data


def _parse_inputs(args: argparse.Namespace) -> tuple[RatchetTree, CipherSuite, bytes]:
    try:
        suite = cipher_suite(int(args.suite))
    except (ValueError, UnsupportedCipherSuite):
        raise _InputError(f"unsupported cipher suite {args.suite!r} (expected 1-7)") from None
    group_id = _hex(args.group_id, "--group-id")
    if args.tree_hex is not None:
        data = _hex(args.tree_hex, "--tree-hex")
    else:
        data = _read_tree_file(args.tree_file)
    try:
        tree = RatchetTree.from_bytes(data)
    except MlsDecodeError as exc:
        raise _InputError(f"malformed ratchet tree: {exc}") from None
    return tree, suite, group_id


def run_tree_info(args: argparse.Namespace) -> int:
    """Run the command on parsed arguments; 0 on success, 1 on malformed input."""
    try:
        tree, suite, group_id = _parse_inputs(args)
    except _InputError as exc:
        message = " ".join(str(exc).split())
        if getattr(args, "json", False):
            sys.stdout.write(error_json("invalid_input", message, {}))
        else:
            print(f"{PROG}: error: {message}", file=sys.stderr)
        return 1
    print(json.dumps(tree_info(tree, suite, group_id)))
    return 0


class _OneLineParser(argparse.ArgumentParser):
    """Usage mistakes as one line on stderr, exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def tree_info_main(argv: list[str]) -> int:
    """`tree-info` as a standalone command; returns the exit status instead of exiting."""
    parser = _OneLineParser(prog=PROG, description=__doc__.splitlines()[0] if __doc__ else None)
    add_tree_info_arguments(parser)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, or a usage error already reported
        return exc.code if isinstance(exc.code, int) else 1
    return run_tree_info(args)


if __name__ == "__main__":
    sys.exit(tree_info_main(sys.argv[1:]))
