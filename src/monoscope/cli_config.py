"""Command-line options generated from the configs of :mod:`monoscope.config`.

Every field becomes one option, spelled ``--field-name`` unless its metadata names the flag, with
the field's help text and its default appended; choices come from ``Literal`` types, validators
from the field's ``parse`` (or its type). argparse keeps no defaults of its own
(``argparse.SUPPRESS``): an option that was not given is absent from the namespace, so the
config's default applies and :func:`given` can tell what the user set.

Hand-rolled over argparse rather than a library (tyro, simple_parsing): the project's validators
(:mod:`monoscope.cli_types`) and its one-line usage errors stay as they are, flags keep their
names, and ``--help`` imports nothing beyond the standard library.
"""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import types
import typing
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Literal, TypeVar

from . import cli_types as T
from ._util import MonoscopeError
from .config import KIND_CONFIGS, KindConfig, Settings

C = TypeVar("C", bound=Settings)


class Formatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the config docstrings' line breaks in descriptions; help wraps as usual."""


def flag_of(f: dataclasses.Field[Any]) -> str:
    return f.metadata.get("flag") or "--" + f.name.replace("_", "-")


def _unwrap(hint: Any) -> tuple[Any, bool]:
    """(the type without ``None``, whether ``None`` was allowed)."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return args[0], len(args) < len(typing.get_args(hint))
    return hint, False


def _scalar(hint: Any, parse: Any) -> dict[str, Any]:
    if typing.get_origin(hint) is Literal:
        choices = typing.get_args(hint)
        return {"choices": choices, "type": parse or type(choices[0])}
    if parse is not None:
        return {"type": parse}
    if hint is bool:
        raise TypeError("a bool inside a list is not an option")
    return {"type": {int: int, float: T.finite_float, Path: Path}.get(hint, str)}


def _show(default: Any) -> str:
    if isinstance(default, tuple):
        return shlex.join(str(x) for x in default) or "none"
    return str(default)


def option_spec(f: dataclasses.Field[Any], hint: Any) -> tuple[list[str], dict[str, Any]]:
    """The ``add_argument`` arguments of one field."""
    meta = f.metadata
    hint, _ = _unwrap(hint)
    kw: dict[str, Any] = {"help": meta.get("help", ""), "dest": f.name}
    has_default = f.default is not dataclasses.MISSING
    if hint is bool:
        kw["action"] = "store_false" if f.default else "store_true"
        if f.default and not meta.get("flag"):
            raise TypeError(f"{f.name}: a flag that defaults to true needs a --no- flag")
    else:
        origin = typing.get_origin(hint)
        if origin is tuple:
            items = typing.get_args(hint)
            kw.update(_scalar(items[0], meta.get("parse")))
            kw["metavar"] = flag_of(f).removeprefix("--").upper().replace("-", "_")
            if "choices" in kw:
                kw["help"] += f"; of {', '.join(map(str, kw['choices']))}"
            if meta.get("repeat"):
                kw["action"] = "append"
            else:
                kw["nargs"] = "+" if len(items) == 2 and items[1] is Ellipsis else len(items)
        else:
            kw.update(_scalar(hint, meta.get("parse")))
            if meta.get("const", dataclasses.MISSING) is not dataclasses.MISSING:
                kw.update(nargs="?", const=meta["const"])
        if meta.get("metavar"):
            kw["metavar"] = meta["metavar"]
        if has_default and f.default is not None:
            kw["help"] += f" (default: {_show(f.default)})"
    if meta.get("positional"):
        kw.pop("dest")
        return [f.name], kw
    if has_default:
        kw["default"] = argparse.SUPPRESS
    else:
        kw["required"] = True
    return [flag_of(f)], kw


COMMON = ("device", "seed", "progress")


def _order(f: dataclasses.Field[Any]) -> tuple[bool, bool]:
    """Required options first, the run options every stage shares last."""
    return f.default is not dataclasses.MISSING, f.name in COMMON


def description(cls: type[Settings]) -> str:
    """The config's docstring as plain text."""
    return (cls.__doc__ or "").replace("``", "")


def add_options(
    parser: argparse.ArgumentParser, cls: type[Settings], skip: Iterable[str] = ()
) -> None:
    """One option per field of ``cls`` (less ``skip``); the parser remembers ``cls``."""
    hints = typing.get_type_hints(cls)
    for f in sorted(dataclasses.fields(cls), key=_order):
        if f.name not in skip:
            names, kw = option_spec(f, hints[f.name])
            parser.add_argument(*names, **kw)
    parser.set_defaults(config=cls)


def command(
    sub: Any,
    name: str,
    help: str,
    cls: type[Settings],
    run: Callable[[Any, argparse.Namespace], list[Path]],
) -> argparse.ArgumentParser:
    """A subcommand of ``sub`` with ``cls``'s options; ``main`` calls ``run(config, args)``
    with the config the command line describes."""
    p = sub.add_parser(name, help=help, description=description(cls), formatter_class=Formatter)
    add_options(p, cls)
    p.set_defaults(run=run)
    return p


def group(sub: Any, name: str, help: str, dest: str) -> Any:
    """A subcommand ``name`` that holds subcommands of its own (``monoscope bench planted``)."""
    return sub.add_parser(name, help=help, formatter_class=Formatter).add_subparsers(
        dest=dest, required=True
    )


def given(args: argparse.Namespace, cls: type[Settings]) -> dict[str, Any]:
    """The fields of ``cls`` set on the command line (lists as tuples)."""
    names = {f.name for f in dataclasses.fields(cls)}
    return {k: tuple(v) if isinstance(v, list) else v for k, v in vars(args).items() if k in names}


def config_of(args: argparse.Namespace, cls: type[C]) -> C:
    """The config the command line describes (defaults from ``cls``)."""
    try:
        return cls(**given(args, cls))
    except ValueError as e:
        raise MonoscopeError(str(e)) from None


# --- the feature-map kinds' own options (``monoscope train``) --------------------------------
def kind_fields() -> dict[str, tuple[dataclasses.Field[Any], Any, list[str]]]:
    """Every kind option: (a field, its type hint, the kinds that take it), in a stable order."""
    out: dict[str, tuple[dataclasses.Field[Any], Any, list[str]]] = {}
    for kind, cls in KIND_CONFIGS.items():
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if f.name in out:
                first = out[f.name][0]
                if first.default != f.default:
                    raise TypeError(f"{f.name}: kinds disagree on its default")
                out[f.name][2].append(kind)
            else:
                out[f.name] = (f, hints[f.name], [kind])
    return out


def add_kind_options(parser: argparse.ArgumentParser) -> None:
    """The options of every kind, each saying which kinds take it."""
    group = parser.add_argument_group("options of the feature-map kinds")
    for f, hint, kinds in kind_fields().values():
        names, kw = option_spec(f, hint)
        kw["help"] += f" [{', '.join(kinds)}]"
        group.add_argument(*names, **kw)


def kind_config_of(args: argparse.Namespace, method: str) -> KindConfig:
    """``method``'s config from the command line; an option of another kind is an error."""
    cls = KIND_CONFIGS[method]
    own = {f.name for f in dataclasses.fields(cls)}
    fields = kind_fields()
    for name in vars(args):
        if name in fields and name not in own:
            flag = flag_of(fields[name][0])
            raise MonoscopeError(f"{flag} applies to {', '.join(fields[name][2])}, not {method}")
    return config_of(args, cls)
