"""`tree-info` through `tree_info_main`, as `statecache mls tree-info` will run it."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest

from client_sdk.mls import synthetic_tree
from client_sdk.mls.cli import add_tree_info_arguments, run_tree_info, tree_info_main
from tests.mls.vectors import load

CASES = load("tree-validation-suite1.json")
KEYS = {
    "n_leaves",
    "tree_hashes",
    "resolutions",
    "parent_hashes_valid",
    "signatures_valid",
    "blank_leaf_ratio",
    "blank_parent_ratio",
    "mean_copath_resolution",
}


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, Any, str]:
    code = tree_info_main(list(argv))
    out, err = capsys.readouterr()
    return code, (json.loads(out) if code == 0 else out), err


@pytest.mark.parametrize("case", CASES[:4] + CASES[-2:])
def test_report_matches_the_vectors(
    capsys: pytest.CaptureFixture[str], case: dict[str, Any]
) -> None:
    code, report, err = run(
        capsys, "--suite", "1", "--group-id", case["group_id"], "--tree-hex", case["tree"]
    )
    assert (code, err) == (0, "")
    assert set(report) == KEYS
    assert report["tree_hashes"] == case["tree_hashes"]
    assert report["resolutions"] == case["resolutions"]
    assert report["n_leaves"] == (len(case["resolutions"]) + 1) // 2
    assert report["parent_hashes_valid"] is True
    assert report["signatures_valid"] is True
    for key in ("blank_leaf_ratio", "blank_parent_ratio"):
        assert 0.0 <= report[key] <= 1.0


def test_wrong_group_id_reports_invalid_signatures(capsys: pytest.CaptureFixture[str]) -> None:
    case = CASES[-1]
    code, report, _ = run(capsys, "--suite", "1", "--group-id", "00", "--tree-hex", case["tree"])
    assert code == 0
    assert report["signatures_valid"] is False
    assert report["parent_hashes_valid"] is True


@pytest.mark.parametrize("as_hex", [False, True])
def test_tree_file_raw_or_hex(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, as_hex: bool
) -> None:
    tree = synthetic_tree(9, blank_ratio=0.2, rng=random.Random(9), suite=2, group_id=b"\x01\x02")
    path = tmp_path / "tree"
    if as_hex:
        path.write_text(tree.to_bytes().hex() + "\n")
    else:
        path.write_bytes(tree.to_bytes())
    code, report, _ = run(capsys, "--suite", "2", "--group-id", "0102", "--tree-file", str(path))
    assert code == 0
    assert report["parent_hashes_valid"] and report["signatures_valid"]
    assert report["n_leaves"] == tree.n_leaves
    assert len(report["tree_hashes"][0]) == 64  # SHA-256


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--suite", "1", "--group-id", "00", "--tree-hex", "zz"], "--tree-hex is not valid hex"),
        (["--suite", "1", "--group-id", "0g", "--tree-hex", "00"], "--group-id is not valid hex"),
        (["--suite", "9", "--group-id", "00", "--tree-hex", "00"], "unsupported cipher suite"),
        (["--suite", "x", "--group-id", "00", "--tree-hex", "00"], "unsupported cipher suite"),
        (["--suite", "1", "--group-id", "00", "--tree-hex", "00"], "malformed ratchet tree"),
        (
            ["--suite", "1", "--group-id", "00", "--tree-hex", CASES[0]["tree"][:-2]],
            "malformed ratchet tree",
        ),
        (
            ["--suite", "1", "--group-id", "00", "--tree-hex", CASES[0]["tree"] + "00"],
            "malformed ratchet tree",
        ),
        (
            ["--suite", "1", "--group-id", "00", "--tree-file", "/nonexistent/tree"],
            "cannot read --tree-file",
        ),
    ],
)
def test_malformed_input_is_one_line_and_non_zero(
    capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    code, out, err = run(capsys, *argv)
    assert code == 1
    assert out == ""
    assert err.count("\n") == 1 and err.startswith("statecache mls tree-info: error: ")
    assert message in err


@pytest.mark.parametrize(
    "argv",
    [
        ["--suite", "1", "--group-id", "00"],
        ["--suite", "1", "--group-id", "00", "--tree-hex", "00", "--tree-file", "x"],
        ["--group-id", "00", "--tree-hex", "00"],
    ],
)
def test_usage_errors_exit_2_with_one_line(
    capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    code, _, err = run(capsys, *argv)
    assert code == 2
    assert err.count("\n") == 1


def test_wiring_into_another_parser(capsys: pytest.CaptureFixture[str]) -> None:
    import argparse

    parser = argparse.ArgumentParser(prog="statecache")
    sub = parser.add_subparsers(dest="command", required=True)
    mls = sub.add_parser("mls").add_subparsers(dest="mls_command", required=True)
    info = mls.add_parser("tree-info")
    add_tree_info_arguments(info)
    info.set_defaults(run=run_tree_info)
    case = CASES[1]
    args = parser.parse_args(
        [
            "mls",
            "tree-info",
            "--suite",
            "1",
            "--group-id",
            case["group_id"],
            "--tree-hex",
            case["tree"],
        ]
    )
    assert args.run(args) == 0
    assert json.loads(capsys.readouterr().out)["tree_hashes"] == case["tree_hashes"]
