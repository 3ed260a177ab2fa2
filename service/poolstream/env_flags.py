"""Every command-line flag also read from a ``POOLSTREAM_*`` environment variable.

The variable of ``--max-num-seqs`` is ``POOLSTREAM_MAX_NUM_SEQS``: the flag's
first long name, upper-cased, dashes as underscores. A flag on the command
line wins over its variable, which wins over the built-in default (the
twelve-factor order containers expect: the image's ``CMD`` or a Kubernetes
``args`` list can still override what the environment sets).

- Valued flags take the variable's text exactly as the flag would (same
  type conversion and choices; a bad value is a usage error naming the
  variable).
- On/off flags (``--allow-url-fetch``, ``--no-access-log``) take
  ``1/true/yes/on`` to switch the flag on and ``0/false/no/off`` (or empty)
  to leave it off; ``--x/--no-x`` pairs take ``POOLSTREAM_X=true|false``.
- Repeated (``append``/``count``) flags have no variable (``serve`` has
  none): a list in one variable would need a syntax of its own.

``--help`` names each flag's variable.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping

PREFIX = "POOLSTREAM_"
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def env_name(action: argparse.Action, prefix: str = PREFIX) -> str | None:
    """The variable of a flag, or None for positionals, --help/--version and append flags."""
    longs = [s for s in action.option_strings if s.startswith("--")]
    if not longs or isinstance(action, (argparse._HelpAction, argparse._VersionAction,
                                        argparse._AppendAction, argparse._CountAction)):
        return None
    name = longs[0]
    if isinstance(action, argparse.BooleanOptionalAction):
        name = next(s for s in longs if not s.startswith("--no-"))
    return prefix + name[2:].upper().replace("-", "_")


def apply_env_defaults(parser: argparse.ArgumentParser, environ: Mapping[str, str] | None = None,
                       prefix: str = PREFIX) -> dict[str, str]:
    """Make each flag's variable its default (see the module docstring); returns the
    variables that were applied. Calls ``parser.error`` (exit 2) on a bad value."""
    environ = os.environ if environ is None else environ
    applied: dict[str, str] = {}
    for action in parser._actions:
        name = env_name(action, prefix)
        if name is None:
            continue
        if action.help is not argparse.SUPPRESS:
            action.help = f"{action.help or ''} [env {name}]".strip()
        raw = environ.get(name)
        if raw is None:
            continue
        try:
            action.default = _value(action, raw)
        except (ValueError, TypeError, argparse.ArgumentTypeError) as e:
            parser.error(f"environment variable {name}={raw!r}: {e}")
        action.required = False
        applied[name] = raw
    return applied


def _value(action: argparse.Action, raw: str) -> object:
    if isinstance(action, argparse.BooleanOptionalAction):
        return _flag(raw)
    if action.nargs == 0:  # store_true / store_false / store_const
        return action.const if _flag(raw) else action.default
    value = action.type(raw) if callable(action.type) else raw
    if action.choices is not None and value not in action.choices:
        raise ValueError(f"invalid choice {value!r} (choose from {', '.join(map(str, action.choices))})")
    return value


def _flag(raw: str) -> bool:
    text = raw.strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError("expected one of 1/true/yes/on or 0/false/no/off")
