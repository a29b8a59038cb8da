"""One exception type for everything a user can get wrong.

The CLI turns a :class:`PVChatError` into a one-line message on stderr and exit code 2;
anything else is a bug and keeps its traceback.
"""


class PVChatError(Exception):
    """Bad input or configuration: a clear, one-line, user-facing message."""


class ConfigError(PVChatError, ValueError):
    """An invalid configuration value (unknown name, inconsistent sizes, ...)."""


class InputError(PVChatError):
    """A bad file, path or name given by the user (corrupt video, no face, ...)."""


def unknown_choice(kind: str, name: str, choices) -> ConfigError:
    """The error for a name that is not in a registry, listing the valid names."""
    return ConfigError(f"unknown {kind} {name!r}; choose one of: {', '.join(sorted(choices))}")
