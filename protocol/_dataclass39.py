"""`dataclass(slots=..., kw_only=...)` and `KW_ONLY` of Python 3.10, for Python 3.9.

Only imported below 3.10 (by `pushjobs.protocol.compat`). `slots` is dropped (it only saves
memory). Keyword-only fields — every field of a `kw_only=True` class, the fields after a
`_: KW_ONLY` marker — get the 3.10 treatment: `__init__` takes the other fields positionally in
field order, then the keyword-only ones by keyword only, so a field without a default may
follow an inherited one with a default.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable
from typing import Any

# The set of keyword-only field names of a class made here, inherited by its subclasses.
_KW_ONLY_NAMES = "__pushjobs_kw_only_names__"


class _KwOnlyMarker:
    """The type of `KW_ONLY`: annotating a pseudo-field with it starts the keyword-only fields."""


KW_ONLY = _KwOnlyMarker


def dataclass(
    cls: type | None = None, /, *, slots: bool = False, kw_only: bool = False, **options: Any
) -> Any:
    """`dataclasses.dataclass` with the 3.10 `slots` and `kw_only` options (see the module)."""

    def wrap(cls: type) -> type:
        own_kw_only = _take_kw_only_names(cls, kw_only)
        inherited: set[str] = set()
        for base in cls.__mro__[1:]:
            inherited |= getattr(base, _KW_ONLY_NAMES, set())
        if not own_kw_only and not inherited:
            return dataclasses.dataclass(cls, **options)
        made: type = dataclasses.dataclass(cls, init=False, **options)
        names = inherited | {f.name for f in dataclasses.fields(made) if f.name in own_kw_only}
        setattr(made, _KW_ONLY_NAMES, names)
        made.__init__ = _make_init(made, names)  # type: ignore[misc]
        return made

    return wrap if cls is None else wrap(cls)


def _take_kw_only_names(cls: type, kw_only: bool) -> set[str]:
    """This class's own keyword-only field names; removes a `_: KW_ONLY` pseudo-field."""
    # its own dict (not inherited ones), changed in place to drop the marker
    annotations: dict[str, Any] = cls.__dict__.get("__annotations__", {})  # noqa: RUF063
    names = list(annotations)
    for name, annotation in list(annotations.items()):
        if annotation is KW_ONLY or annotation == "KW_ONLY":
            start = names.index(name)
            del annotations[name]
            return set(names[start + 1 :])
    return set(names) if kw_only else set()


def _make_init(cls: type, kw_only_names: set[str]) -> Callable[..., None]:
    fields = dataclasses.fields(cls)
    positional = [f for f in fields if f.init and f.name not in kw_only_names]
    keyword = [f for f in fields if f.init and f.name in kw_only_names]
    signature = inspect.Signature(
        [_parameter(f, inspect.Parameter.POSITIONAL_OR_KEYWORD) for f in positional]
        + [_parameter(f, inspect.Parameter.KEYWORD_ONLY) for f in keyword]
    )

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        given = signature.bind(*args, **kwargs).arguments
        for f in fields:
            if f.name in given:
                value = given[f.name]
            elif f.default is not dataclasses.MISSING:
                value = f.default
            elif f.default_factory is not dataclasses.MISSING:
                value = f.default_factory()
            else:  # an `init=False` field without a default: `__post_init__` sets it
                continue
            object.__setattr__(self, f.name, value)
        post_init = getattr(self, "__post_init__", None)
        if post_init is not None:
            post_init()

    __init__.__qualname__ = f"{cls.__qualname__}.__init__"
    self_parameter = inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)
    __init__.__signature__ = signature.replace(  # type: ignore[attr-defined]
        parameters=[self_parameter, *signature.parameters.values()]
    )
    return __init__


def _parameter(f: dataclasses.Field[Any], kind: inspect._ParameterKind) -> inspect.Parameter:
    has_default = (
        f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
    )
    default = dataclasses.MISSING if has_default else inspect.Parameter.empty
    return inspect.Parameter(f.name, kind, default=default)
