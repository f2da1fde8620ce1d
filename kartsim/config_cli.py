"""argparse flags generated from config dataclasses: one flag per field, its help the field's
docstring, its type, choices (the class's ``CHOICES``) and default from the field, so a flag cannot
drift from the config it sets.

A field ``n_steps: int | None`` of a part ``ppo`` becomes ``--n-steps`` with dest ``ppo.n_steps``;
``metadata=cli(flag=..., metavar=..., parse=...)`` (`kartsim.rl.config.cli`) renames it. A bool that
defaults to True becomes ``--no-<name>`` (or its ``flag``), one that defaults to False a switch; a
``list[str]`` takes one or more values; a dict takes repeatable ``KEY=VALUE`` items. Every flag
defaults to None, so `given_values` tells what the user set from what they left alone.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import functools
import inspect
import json
import re
import textwrap
import types
import typing
from typing import Any, Callable

from kartsim.validation import flag_name


@functools.cache
def field_docs(cls: type) -> dict[str, str]:
    """{field name: its attribute docstring} of the dataclass `cls` (the string right after the field),
    whitespace collapsed; fields without one take those of ``cls.DOCS_FROM`` when it names a class."""
    docs: dict[str, str] = {}
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    except (OSError, TypeError):  # no source (frozen app): flags without help text
        return docs
    body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
    for node, after in zip(body, body[1:]):
        if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and isinstance(after, ast.Expr)
                and isinstance(after.value, ast.Constant) and isinstance(after.value.value, str)):
            docs[node.target.id] = " ".join(after.value.value.split())
    source = getattr(cls, "DOCS_FROM", None)
    if isinstance(source, type):
        docs = {**{k: v for k, v in field_docs(source).items() if k in cls.__dataclass_fields__}, **docs}
    return docs


def whole_number(text: str) -> int:
    try:
        return int(text.replace("_", "").replace(",", ""))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None


def number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None


def key_value(text: str) -> tuple[str, Any]:
    """``KEY=VALUE`` -> (key, VALUE read as JSON where it is JSON, else the text)."""
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    key, raw = text.split("=", 1)
    try:
        value = json.loads(raw)
    except ValueError:
        value = raw
    return key.strip(), value


def _base(hint: Any) -> Any:
    """``int | None`` -> int (the hint without None)."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return hint


def _default_text(f: dataclasses.Field) -> str | None:
    if f.default is not dataclasses.MISSING:
        value = f.default
    elif f.default_factory is not dataclasses.MISSING:
        value = f.default_factory()
    else:
        return None
    if value is None or value == {} or isinstance(value, bool):
        return None
    return " ".join(map(str, value)) if isinstance(value, list) else format(value, ",") if type(value) is int else str(value)


def plain_text(doc: str) -> str:
    """A docstring as help text: reST roles (``:class:`X```) and backtick quoting dropped."""
    return re.sub(r":[a-z]+:`~?([^`]*)`", r"\1", doc).replace("`", "")


def _help(doc: str, note: str | None, negated: bool) -> str:
    text = (f"turn off: {doc}" if negated else doc) + (f" (default {note})" if note else "")
    return plain_text(text).replace("%", "%%")  # argparse formats help with %


def flag_kwargs(cls: type, f: dataclasses.Field, hint: Any) -> tuple[str, dict[str, Any]]:
    """(flag, add_argument keyword arguments) for the field `f` of `cls` (its resolved type `hint`)."""
    meta = f.metadata.get("cli", {})
    base = _base(hint)
    kwargs: dict[str, Any] = {"default": None}
    choices = getattr(cls, "CHOICES", {}).get(f.name)
    if choices:
        kwargs["choices"] = list(choices)  # argparse shows them: {constant,linear}
    else:
        kwargs["metavar"] = meta.get("metavar") or f.name.upper()
    flag = flag_name(f)
    if base is bool:
        negated = f.default is True
        if negated and not meta.get("flag"):
            flag = f"--no-{f.name.replace('_', '-')}"
        kwargs["action"] = "store_false" if negated else "store_true"
        kwargs.pop("metavar", None)
    elif typing.get_origin(base) is list:
        kwargs["nargs"] = "+"
    elif typing.get_origin(base) is dict:
        kwargs.update(action="append", type=meta.get("parse", key_value))
    else:
        kwargs["type"] = {int: whole_number, float: number}.get(base, str)
    return flag, kwargs


def add_dataclass_arguments(parser: Any, cls: type, *, prefix: str = "", skip: tuple[str, ...] = (),
                            default_note: Callable[[str], str | None] = lambda dest: None) -> None:
    """A flag for every field of `cls` (except `skip`) on `parser` (a parser or an argument group);
    dests are ``prefix + field name``. `default_note(dest)` may describe a None default
    (``64 rays, 16 vision``)."""
    hints = typing.get_type_hints(cls)
    docs = field_docs(cls)
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        flag, kwargs = flag_kwargs(cls, f, hints[f.name])
        dest = prefix + f.name
        note = _default_text(f) if kwargs.get("action") not in ("store_true", "store_false") else None
        kwargs["help"] = _help(docs.get(f.name, ""), default_note(dest) or note,
                               kwargs.get("action") == "store_false")
        parser.add_argument(flag, dest=dest, **kwargs)


def given_values(args: argparse.Namespace, dests: set[str]) -> dict[str, Any]:
    """{dest: value} of the generated flags in `dests` that the command line set (KEY=VALUE lists as dicts)."""
    out: dict[str, Any] = {}
    for dest in dests:
        value = getattr(args, dest, None)
        if value is None:
            continue
        if isinstance(value, list) and value and isinstance(value[0], tuple):
            value = dict(value)
        out[dest] = value
    return out


__all__ = ["add_dataclass_arguments", "field_docs", "flag_kwargs", "given_values", "key_value", "number", "plain_text",
           "whole_number"]
