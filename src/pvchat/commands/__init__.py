"""The ``pvchat`` subcommands, one module per command, each a thin typed function over the library.

``pvchat.cli`` builds the parser from each function's signature and docstring (see its module
doc), so these modules are imported to answer ``pvchat --help``: at module level they import
only the standard library, :mod:`pvchat.errors`, :mod:`pvchat.choices` and this package; torch,
cv2, transformers, gradio and the library modules that need them are imported inside the
function, when the command runs. The library never prints and never reads ``sys.argv``: what a
command shows is printed here.

An option that takes a name from a registry is annotated ``Annotated[str, OneOf(NAMES)]``: its
names are listed in ``--help``; the library still checks the value (its one-line error).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class OneOf:
    """The names an option accepts (``--help`` lists them); ``other`` says what else it takes
    (e.g. "a YAML path"), else only these names."""

    names: tuple[str, ...]
    other: str | None = None

    def help(self) -> str:
        listed = ", ".join(self.names)
        return f"one of: {listed}, or {self.other}" if self.other else f"one of: {listed}"
