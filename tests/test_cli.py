"""The command line: subcommands from typed functions, docstrings as help, one-line errors."""

import subprocess
import sys

from pvchat import cli
from pvchat.choices import load_target


def run(*args):
    return subprocess.run([sys.executable, "-m", "pvchat.cli", *args], capture_output=True, text=True, timeout=120)


def test_help_lists_every_subcommand():
    out = run("--help")
    assert out.returncode == 0
    for name in cli.COMMANDS:
        assert name in out.stdout


def test_subcommand_help_is_the_function_docstring():
    fn = load_target(cli.COMMANDS["info"])
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
    assert len(lines) == 1 and "choose one of: demo, face, paper, small, tiny" in lines[0] \
        and "Traceback" not in out.stderr


# --- start-up: the parser is built from light modules --------------------------------------------

HEAVY = ("torch", "transformers", "cv2", "gradio", "dlib", "accelerate", "diffusers")


def test_help_answers_fast():
    """`pvchat --help` and `pvchat COMMAND --help` import no heavy library: well under 2 s each."""
    import time

    for args in (["--help"], *([name, "--help"] for name in cli.COMMANDS)):
        start = time.perf_counter()
        out = run(*args)
        took = time.perf_counter() - start
        assert out.returncode == 0, out.stderr
        assert took < 2.0, f"pvchat {' '.join(args)} took {took:.1f} s"


def test_the_parser_imports_no_heavy_library():
    script = ("import sys; import pvchat.cli; before = set(sys.modules); pvchat.cli.build_parser(); "
              f"print(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r})); "
              f"print(sorted(m for m in before if m.split('.')[0] in {HEAVY!r}))")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    after_build, after_import = out.stdout.splitlines()
    assert after_import == "[]", f"import pvchat.cli imported {after_import}"
    assert after_build == "[]", f"building the parser imported {after_build}"


# --- registry names in --help ----------------------------------------------------------------------


def _registries() -> dict[tuple[str, str], tuple[list[str], bool]]:
    """(command, parameter) -> (the registry's names, whether other values are accepted too)."""
    from pvchat.eval.ablate import STUDIES
    from pvchat.faces.demographics import AGES, BACKENDS, GENDERS
    from pvchat.model.presets import list_presets
    from pvchat.qa.generate import RECIPES as QA_RECIPES
    from pvchat.synth.base import list_generators
    from pvchat.synth.pipeline import SYNTH_RECIPES
    from pvchat.train.stages import recipe_path

    recipes = sorted(p.stem for p in recipe_path("demo").parent.glob("*.yaml"))
    table = {(cmd, "preset"): (list_presets(), False)
             for cmd in ("info", "pretrain", "train", "learn", "ablate", "demo", "serve")}
    table[("eval", "base_preset")] = (list_presets(), False)
    table.update({(cmd, "recipe"): (recipes, True) for cmd in ("train", "learn", "ablate", "serve")})
    table.update({
        ("synthesize", "backend"): (list_generators(), False),
        ("synthesize", "recipe"): (sorted(SYNTH_RECIPES), False),
        ("compose", "qa"): (sorted(QA_RECIPES), False),
        ("ablate", "study"): (list(STUDIES), False),
        ("analyze", "demographics"): (list(BACKENDS), True),
        ("analyze", "gender"): (list(GENDERS), False),
        ("analyze", "age"): (list(AGES), False),
    })
    return table


def _listed(command: str, dest: str) -> tuple[list[str], bool]:
    """The names `pvchat COMMAND --help` lists for the option (or positional) ``dest``."""
    import argparse
    import re

    sub = next(a for a in cli.build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    parser = sub.choices[command]
    action = next(a for a in parser._actions if a.dest == dest)
    text = " ".join(parser.format_help().split())
    if action.metavar and action.metavar.startswith("{"):
        assert action.metavar in text
        return action.metavar[1:-1].split(","), False
    m = re.search(r"\(one of: ([^()]*?), or [^()]*\)", " ".join((action.help or "").split()))
    assert m, f"pvchat {command} --help does not list the names of {dest}: {action.help!r}"
    assert m.group(0) in text
    return m.group(1).split(", "), True


def test_registry_options_list_their_names_in_help():
    for (command, dest), expected in _registries().items():
        assert _listed(command, dest) == expected, (command, dest)


def test_every_registry_option_is_checked_against_its_registry():
    """Each option annotated OneOf(...) has its registry in the table above (a new one must be added)."""
    import typing

    from pvchat.commands import OneOf

    annotated = set()
    for command, target in cli.COMMANDS.items():
        for name, hint in typing.get_type_hints(load_target(target), include_extras=True).items():
            if cli._base_type(hint)[2] is not None:
                annotated.add((command, name))
    assert annotated == set(_registries())
    assert OneOf(("a", "b")).help() == "one of: a, b"


def test_default_demo_preset_is_the_demos():
    import inspect

    from pvchat.offline.demo import PRESET

    assert inspect.signature(load_target(cli.COMMANDS["demo"])).parameters["preset"].default == PRESET
