"""The command line: subcommands from typed functions, docstrings as help, one-line errors."""

import subprocess
import sys

from pvchat import cli


def run(*args):
    return subprocess.run([sys.executable, "-m", "pvchat.cli", *args], capture_output=True, text=True, timeout=120)


def test_help_lists_every_subcommand():
    out = run("--help")
    assert out.returncode == 0
    for name in cli.COMMANDS:
        assert name in out.stdout


def test_subcommand_help_is_the_function_docstring():
    fn = cli._load(cli.COMMANDS["info"])
    out = run("info", "--help")
    assert out.returncode == 0
    summary = fn.__doc__.strip().split("\n")[0]
    assert summary in " ".join(out.stdout.split())
    assert "--preset" in out.stdout and "model preset name" in out.stdout


def test_info_tiny_prints_counts():
    out = run("info", "--preset", "tiny")
    assert out.returncode == 0 and "total" in out.stdout


def test_bad_input_is_one_line_and_exit_2():
    out = run("info", "--preset", "huge")
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "choose one of: demo, face, paper, small, tiny" in lines[0] and "Traceback" not in out.stderr
