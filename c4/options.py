"""Config sections as checked dataclasses: built from TOML / environment dicts, unknown keys refused, the bad
key named.

The agent reads its config through these, not pydantic: pydantic and its models held ~10 MiB of the agent's
61 MiB resident. msgspec does the same job and was tried first, but its import alone is ~1.6 MiB in a
process whose budget is 50 MiB and that measured 50.4 with it; the few types a section uses (str, bool,
int, float, Path, enums, Literal, optional, list and dict of those) are checked here in ~100 lines.
``model_validate``, ``model_dump``, ``model_copy`` and ``model_fields`` keep the names pydantic callers use.
Constraints are declared with ``Annotated[int, Meta(ge=1)]``; checks across keys go in ``__post_init__``
(raise ValueError starting ``[section.key]``).
"""

from __future__ import annotations

import dataclasses
import enum
import math
import os
import re
import types
import typing
from dataclasses import field  # noqa: F401 - re-exported: ``field(default_factory=...)`` in sections
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Self, Union, get_args, get_origin

_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off"})


@dataclasses.dataclass(frozen=True)
class Meta:
    """Bounds of a number: ``Annotated[int, Meta(ge=1)]``."""

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None

    def problem(self, v: float) -> str:
        """Why ``v`` is out of bounds, or ''."""
        for name, bound, ok in (
            ("ge", self.ge, lambda b: v >= b),
            ("gt", self.gt, lambda b: v > b),
            ("le", self.le, lambda b: v <= b),
            ("lt", self.lt, lambda b: v < b),
        ):
            if bound is not None and not ok(bound):
                sign = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}[name]
                return f"must be {sign} {bound}, got {v!r}"
        return ""


class OptionsError(ValueError):
    """A config section does not fit its declaration: ``[section.key] detail`` (key '' for the whole section)."""

    def __init__(self, section: str, key: str, detail: str) -> None:
        super().__init__(f"[{section}.{key}] {detail}" if key else f"[{section}] {detail}")
        self.section, self.key, self.detail = section, key, detail


class _Bad(Exception):
    """A value that does not fit its type (the message says why)."""


def _shown(v: Any) -> str:
    return f"{type(v).__name__} {v!r}"[:120]


def _convert(tp: Any, v: Any) -> Any:
    """``v`` as type ``tp`` (strings from the environment converted), else _Bad."""
    origin = get_origin(tp)
    if origin is Annotated:
        base, *extras = get_args(tp)
        out = _convert(base, v)
        for meta in extras:
            if isinstance(meta, Meta) and out is not None and (problem := meta.problem(out)):
                raise _Bad(problem)
        return out
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if v is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _convert(arg, v)
            except _Bad as exc:
                errors.append(str(exc))
        raise _Bad("; ".join(errors))
    if origin is Literal:
        if v in get_args(tp):
            return v
        raise _Bad(f"expected one of {', '.join(map(repr, get_args(tp)))}, got {v!r}")
    if origin is list:
        if not isinstance(v, list | tuple):
            raise _Bad(f"expected a list, got {_shown(v)}")
        (item,) = get_args(tp) or (Any,)
        return [_convert(item, x) for x in v]
    if origin is dict:
        if not isinstance(v, dict):
            raise _Bad(f"expected a table, got {_shown(v)}")
        k_tp, v_tp = get_args(tp) or (Any, Any)
        return {_convert(k_tp, k): _convert(v_tp, x) for k, x in v.items()}
    return _scalar(tp, v)


def _scalar(tp: Any, v: Any) -> Any:
    if tp is Any:
        return v
    if tp is dict:
        if isinstance(v, dict):
            return v
        raise _Bad(f"expected a table, got {_shown(v)}")
    if tp is bool:
        if isinstance(v, bool):
            return v
        if isinstance(v, str) and v.strip().lower() in _TRUE | _FALSE:
            return v.strip().lower() in _TRUE
        raise _Bad(f"expected true or false, got {_shown(v)}")
    if tp is int:
        if isinstance(v, int) and not isinstance(v, bool):
            return v
        if isinstance(v, float) and v.is_integer():
            return int(v)
        if isinstance(v, str) and re.fullmatch(r"\s*[-+]?\d+\s*", v):
            return int(v)
        raise _Bad(f"expected an integer, got {_shown(v)}")
    if tp is float:
        number: float | None = None
        if isinstance(v, int | float) and not isinstance(v, bool):
            number = float(v)
        elif isinstance(v, str):
            try:
                number = float(v)
            except ValueError:
                pass
        if number is None:
            raise _Bad(f"expected a number, got {_shown(v)}")
        if not math.isfinite(number):  # an interval of inf never ticks, nan compares false with every bound
            raise _Bad(f"expected a finite number, got {_shown(v)}")
        return number
    if tp is str:
        if isinstance(v, str):
            return v
        raise _Bad(f"expected a string, got {_shown(v)}")
    if tp is Path:
        if isinstance(v, str | os.PathLike):
            return Path(v)
        raise _Bad(f"expected a path, got {_shown(v)}")
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        try:
            return tp(v)
        except ValueError:
            raise _Bad(f"expected one of {', '.join(repr(m.value) for m in tp)}, got {v!r}") from None
    raise _Bad(f"cannot check a value of type {tp!r}")  # a declaration this module does not know


_OWN_CHECK = re.compile(r"^\[(?P<where>[^\]]*)\] (?P<detail>.*)$", re.S)


class Options:
    """Base of a config section; every subclass is a keyword-only dataclass. ``model_validate(dict)`` checks
    and converts; keyword construction takes values as they are (``__post_init__`` checks run either way)."""

    #: shown in error messages: ``[section.key]``
    section: ClassVar[str] = "options"
    _hints: ClassVar[dict[str, Any] | None] = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._hints = None
        dataclasses.dataclass(kw_only=True)(cls)

    @classmethod
    def _types(cls) -> dict[str, Any]:
        if cls.__dict__.get("_hints") is None:
            hints = typing.get_type_hints(
                cls, include_extras=True
            )  # each class's own module resolves its names
            cls._hints = {f.name: hints[f.name] for f in dataclasses.fields(cls)}
        return cls._hints

    @classmethod
    def model_validate(cls, data: Any, section: str | None = None) -> Self:
        """The section from a dict (or itself); OptionsError naming the key that does not fit."""
        where = section or cls.section
        if isinstance(data, cls):
            return data
        if not isinstance(data, dict):
            raise OptionsError(where, "", f"expected a table, got {_shown(data)}")
        types_ = cls._types()
        values = {}
        for key, v in data.items():
            if key not in types_:
                raise OptionsError(where, str(key), "unknown key (not allowed here)")
            try:
                values[key] = _convert(types_[key], v)
            except _Bad as exc:
                raise OptionsError(where, key, str(exc)) from None
        try:
            return cls(**values)
        except (ValueError, TypeError) as exc:
            own = _OWN_CHECK.match(str(exc))
            if not own:
                raise OptionsError(where, "", str(exc)) from None
            w = own["where"]
            raise OptionsError(
                where, w[len(where) + 1 :] if w.startswith(where + ".") else "", own["detail"]
            ) from None

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        """Every key the section declares."""
        return tuple(f.name for f in dataclasses.fields(cls))

    def model_copy(self, update: dict[str, Any] | None = None) -> Self:
        """A copy with some keys replaced (taken as they are, like keyword construction)."""
        return dataclasses.replace(self, **(update or {}))

    def model_dump(self, exclude: set[str] | frozenset[str] = frozenset()) -> dict[str, Any]:
        """The section as a dict of its values (containers copied)."""
        out = {}
        for name in self.field_names():
            if name in exclude:
                continue
            v = getattr(self, name)
            if isinstance(v, dict):
                v = {k: dict(x) if isinstance(x, dict) else x for k, x in v.items()}
            elif isinstance(v, list):
                v = list(v)
            out[name] = v
        return out


class _FieldNames:
    """``Cls.model_fields``: the declared keys (a dict, as pydantic callers expect to iterate it)."""

    def __get__(self, obj: Any, owner: type[Options]) -> dict[str, None]:
        return dict.fromkeys(owner.field_names()) if owner is not Options else {}


Options.model_fields = _FieldNames()  # type: ignore[attr-defined]
