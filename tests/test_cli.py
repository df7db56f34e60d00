"""The command line as a user runs it: help for every command, and status on a real dataset."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from folder_fixture import make_folder

from hitts.app.cli import build_parser, main

COMMANDS = sorted(build_parser()._subparsers._group_actions[0].choices)


def test_top_level_help_lists_every_command():
    out = subprocess.run(
        [sys.executable, "-m", "hitts.app.cli", "--help"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for command in COMMANDS:
        assert command in out


@pytest.mark.parametrize("command", COMMANDS)
def test_every_flag_has_help(command):
    parser = build_parser()._subparsers._group_actions[0].choices[command]
    for action in parser._actions:
        if action.dest != "help":
            assert action.help, (
                f"hitts {command}: {action.option_strings or action.dest} has no help"
            )
    assert parser.format_help().startswith("usage: hitts " + command)


def test_status_table_and_json(tmp_path, dataset_name, capsys):
    make_folder(tmp_path / "src", n=6, val=2)
    assert (
        main(
            [
                "ingest",
                str(tmp_path / "src"),
                "--name",
                dataset_name,
                "--setting",
                "one-label",
                "-q",
            ]
        )
        == 0
    )
    capsys.readouterr()
    assert main(["status", dataset_name, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["splits"] == {"train": 4, "val": 2}
    assert sum(report["tasks"][t]["labeled"] for t in report["tasks"]) == 4 + 2 * 4
    assert main(["status", dataset_name]) == 0
    table = capsys.readouterr().out
    assert "setting one-label" in table and "semseg" in table


def test_status_of_unknown_dataset(caplog):
    assert main(["status", "no-such-dataset-xyz"]) == 2
    assert "no dataset named 'no-such-dataset-xyz'" in caplog.text


def test_bad_size_flag(capsys):
    with pytest.raises(SystemExit):
        main(["generate", "out", "--size", "96by128"])
    assert "size must be HxW" in capsys.readouterr().err
