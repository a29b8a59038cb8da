"""``pvchat`` command line: one subcommand per pipeline stage, each a plain typed function.

A subcommand is registered in :data:`COMMANDS` as ``"module:function"``. Its arguments come
from the function's signature (parameters without a default are positional, keyword-only ones
without a default are required ``--options``, the others ``--options``; a list option may be
repeated) and its help from the docstring: the first paragraph is the one-line summary, the
``Args:`` section documents each option. An option annotated ``Annotated[str, OneOf(NAMES)]``
lists NAMES in its help.

The command functions live in :mod:`pvchat.commands`, one module per command; building the parser
imports them all, so they import heavy libraries (torch, cv2, transformers, gradio) only when run
and ``pvchat --help`` stays fast.
"""

from __future__ import annotations

import argparse
import inspect
import re
import sys
import types
import typing
from pathlib import Path
from typing import Any, Callable

from pvchat.choices import load_target
from pvchat.commands import OneOf
from pvchat.errors import PVChatError

# name -> "module:function" (the modules of pvchat.commands). Keep sorted by pipeline order.
COMMANDS: dict[str, str] = {
    "info": "pvchat.commands.info:info",
    "world": "pvchat.commands.world:world",
    "analyze": "pvchat.commands.analyze:analyze",
    "synthesize": "pvchat.commands.synthesize:synthesize",
    "compose": "pvchat.commands.compose:compose",
    "eval-generator": "pvchat.commands.eval_generator:eval_generator",
    "pretrain": "pvchat.commands.pretrain:pretrain",
    "train": "pvchat.commands.train:train",
    "learn": "pvchat.commands.learn:learn",
    "ask": "pvchat.commands.ask:ask",
    "chat": "pvchat.commands.chat:chat",
    "forget": "pvchat.commands.forget:forget",
    "eval": "pvchat.commands.eval:evaluate",
    "ablate": "pvchat.commands.ablate:ablate",
    "demo": "pvchat.commands.demo:demo",
    "serve": "pvchat.commands.serve:serve",
}


def _doc_parts(fn: Callable[..., Any]) -> tuple[str, str, dict[str, str]]:
    """(summary, description without Args, {arg: help}) from a Google-style docstring."""
    doc = inspect.cleandoc(fn.__doc__ or "")
    summary = doc.split("\n\n")[0].replace("\n", " ")
    args_help: dict[str, str] = {}
    m = re.search(r"^Args:\n(.*?)(?:^\S|\Z)", doc + "\n", flags=re.S | re.M)
    description = doc
    if m:
        description = doc[: m.start()].rstrip()
        current = None
        for line in m.group(1).splitlines():
            item = re.match(r"\s{2,}(\w+)(?: \(.*?\))?:\s*(.*)", line)
            if item and (len(line) - len(line.lstrip())) <= 4:
                current = item.group(1)
                args_help[current] = item.group(2)
            elif current and line.strip():
                args_help[current] += " " + line.strip()
    return summary, description, args_help


def _base_type(annotation: Any) -> tuple[Any, bool, OneOf | None]:
    """Strip Optional[...] and Annotated[...]; returns (type, is_list, the OneOf it was annotated with)."""
    if typing.get_origin(annotation) is typing.Annotated:
        typ, is_list, _ = _base_type(typing.get_args(annotation)[0])
        return typ, is_list, next((m for m in annotation.__metadata__ if isinstance(m, OneOf)), None)
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return _base_type(args[0])
    if origin in (list, tuple):
        typ, _, one_of = _base_type(typing.get_args(annotation)[0])
        return typ, True, one_of
    return annotation, False, None


def _add_function_arguments(parser: argparse.ArgumentParser, fn: Callable[..., Any]) -> None:
    hints = typing.get_type_hints(fn, include_extras=True)
    _, _, arg_help = _doc_parts(fn)
    for name, param in inspect.signature(fn).parameters.items():
        typ, is_list, one_of = _base_type(hints.get(name, str))
        help_text = arg_help.get(name, "")
        choices = typing.get_args(typ) if typing.get_origin(typ) is typing.Literal else None
        conv = str if choices else (typ if typ in (int, float, str, Path) else str)
        names: dict[str, Any] = {}
        if one_of is not None and one_of.other is None:  # listed, not enforced here: the library's
            names["metavar"] = "{" + ",".join(one_of.names) + "}"  # one-line error names the valid ones
        elif one_of is not None:
            help_text = f"{help_text} ({one_of.help()})".strip()
        if param.default is inspect.Parameter.empty and param.kind is inspect.Parameter.KEYWORD_ONLY:
            repeat = {"nargs": "+", "action": "extend"} if is_list else {}  # --name A --name B
            parser.add_argument("--" + name.replace("_", "-"), dest=name, type=conv, help=help_text + " (required)",
                                choices=choices, required=True, **repeat, **names)
            continue
        if param.default is inspect.Parameter.empty:
            parser.add_argument(name, type=conv, help=help_text, choices=choices,
                                nargs="+" if is_list else None, **names)
            continue
        flag = "--" + name.replace("_", "-")
        if typ is bool:
            parser.add_argument(flag, dest=name, action=argparse.BooleanOptionalAction,
                                default=param.default, help=help_text)
        else:
            default_txt = f" (default: {param.default})" if param.default not in (None, "") else ""
            extend = {"action": "extend"} if is_list and param.default is None else {}  # --opt A --opt B C
            parser.add_argument(flag, dest=name, type=conv, default=param.default, choices=choices,
                                nargs="+" if is_list else None, help=help_text + default_txt, **extend, **names)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pvchat",
        description="Personalized video chat: learn a person from one reference video, "
        "then answer identity-aware questions about other videos (PVChat, ICCV 2025).",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, target in COMMANDS.items():
        fn = load_target(target)
        summary, description, _ = _doc_parts(fn)
        p = sub.add_parser(name, help=summary, description=description,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        _add_function_arguments(p, fn)
        p.set_defaults(_fn=fn)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    kwargs = {k: v for k, v in vars(args).items() if k not in ("command", "_fn")}
    try:
        result = args._fn(**kwargs)
    except PVChatError as e:
        print(f"pvchat {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"pvchat {args.command}: interrupted", file=sys.stderr)
        return 130
    return int(result) if isinstance(result, int) and not isinstance(result, bool) else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
