"""The fields a grid may set: those of `ModelArguments`, `DataArguments`, `CDTMTrainingArguments` and `RunArguments`.

Values are typed the way `examples/run_sft.py` types its command line: through `transformers.HfArgumentParser`'s
own argv path (`--name value`), so a grid file, `--set key=value` and `run_sft.py --key value` accept the same
spellings (`1e-4`, `true`, `no`, ...). The field list is read from the dataclasses, never copied here.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from transformers import HfArgumentParser

from ..training.arguments import CDTMArgumentParser, CDTMTrainingArguments
from ..training.run_arguments import DataArguments, ModelArguments, RunArguments

#: The argument dataclasses of one run, in `run_finetuning`'s order (the same parser as `examples/run_sft.py`).
ARGUMENT_CLASSES = (ModelArguments, DataArguments, CDTMTrainingArguments, RunArguments)


@lru_cache(maxsize=1)
def argument_parser() -> HfArgumentParser:
    """The one `HfArgumentParser` over the argument classes (argparse errors raise instead of exiting)."""
    return CDTMArgumentParser(ARGUMENT_CLASSES, exit_on_error=False)  # a YAML boolean for auto/True/False (issue 18)


@lru_cache(maxsize=1)
def _field_index() -> dict[str, tuple[type, dataclasses.Field]]:
    """field name -> (owning dataclass, its `dataclasses.Field`), the first class that declares it."""
    index: dict[str, tuple[type, dataclasses.Field]] = {}
    for cls in ARGUMENT_CLASSES:
        for f in dataclasses.fields(cls):
            if f.init and not f.name.startswith("_"):
                index.setdefault(f.name, (cls, f))
    return index


def field_names() -> list[str]:
    """Every field a grid may set (besides `recipe`), sorted."""
    return sorted(_field_index())


def is_field(name: Any) -> bool:
    """Whether `name` is a field of one of the argument classes."""
    return isinstance(name, str) and name in _field_index()


@lru_cache(maxsize=None)
def _instance_defaults(cls: type) -> dict[str, Any]:
    """The values a default-constructed instance holds (`__post_init__` may fill a None default, e.g. the
    backbone); {} for the training arguments, whose construction does far more than fill defaults, and for a class
    whose defaults alone do not pass its checks (an imagefolder needs a `data_dir`)."""
    if issubclass(cls, CDTMTrainingArguments):
        return {}
    try:
        return dataclasses.asdict(cls())
    except ValueError:
        return {}


def field_default(name: str) -> Any:
    """The value a field takes when the grid does not set it: what a default instance of its dataclass holds.

    Args:
        name (`str`): a field of one of `ARGUMENT_CLASSES`.
    """
    cls, f = _field_index()[name]
    instance = _instance_defaults(cls)
    if name in instance:
        return instance[name]
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


@lru_cache(maxsize=None)
def _type_hint(name: str) -> Any:
    cls = _field_index()[name][0]
    return typing.get_type_hints(cls)[name]


def _hint_args(name: str) -> tuple[Any, ...]:
    hint = _type_hint(name)
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return typing.get_args(hint)
    return (hint,)


def _allows_none(name: str) -> bool:
    return type(None) in _hint_args(name) or field_default(name) is None


def expected_type(name: str) -> str:
    """The field's type in words, e.g. 'int' or 'float' ('None' left out: null is checked separately)."""
    names = [getattr(t, "__name__", str(t)) for t in _hint_args(name) if t is not type(None)]
    return " or ".join(names) or "a value"


def _argv_token(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def coerce_value(name: str, value: Any) -> Any:
    """The value field `name` gets from `value`, as `run_sft.py --name value` would give it.

    Strings, numbers and booleans go through `HfArgumentParser`'s argv path (YAML reads `1e-4` as a string; it
    becomes the float 0.0001; `"false"` becomes False for a bool field). Null is kept where the field allows it.
    A mapping (a dict field such as `lr_scheduler_kwargs`) is passed on for the dataclass to check.

    Args:
        name (`str`): a field of `ModelArguments`, `DataArguments` or `CDTMTrainingArguments`.
        value (`Any`): the value as read from the grid file or the command line.

    Raises:
        `ValueError`: a value the field cannot take, naming the field, the type it expects and the value.
    """
    if value is None:
        if _allows_none(name):
            return None
        raise ValueError(f"{name} may not be null; it expects {expected_type(name)} (default "
                         f"{field_default(name)!r}): give a value or leave the key out")
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, (list, tuple)):
        if not value:
            return []
        tokens = [_argv_token(v) for v in value]
        argv = [f"--{name}", *tokens]
    else:
        argv = [f"--{name}={_argv_token(value)}"]
    try:
        namespace, rest = argument_parser().parse_known_args(argv)
    except argparse.ArgumentError as err:
        if "invalid choice" in err.message:
            raise ValueError(f"{name} {value!r}: {err.message}") from None
        raise ValueError(f"{name} expects {expected_type(name)}, got {value!r}") from None
    if rest and rest[0].split("=")[0] == f"--{name}":  # a field the parser leaves out: the dataclass checks it
        return value
    if rest:
        raise ValueError(f"{name} expects a single {expected_type(name)}, got {value!r}")
    return getattr(namespace, name)


def build_arguments(values: Mapping[str, Any]) -> tuple[Any, ...]:
    """The argument dataclasses of one run (`ARGUMENT_CLASSES`) from field values, via `HfArgumentParser.parse_dict`.

    Raises:
        `ValueError`: a key that is no field (`parse_dict`'s own check), or a dataclass's own check failing.
    """
    return argument_parser().parse_dict(dict(values), allow_extra_keys=False)


__all__ = [
    "ARGUMENT_CLASSES",
    "argument_parser",
    "build_arguments",
    "coerce_value",
    "expected_type",
    "field_default",
    "field_names",
    "is_field",
]
