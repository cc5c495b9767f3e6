"""Config sections as msgspec Structs: checked from TOML / environment dicts, unknown keys refused, the bad key named.

The agent reads its config through these instead of pydantic (~12 MiB resident in a process that should
hold 50 MiB in all; msgspec is ~1.5 MiB). ``model_validate``, ``model_dump`` and ``model_fields`` keep the
names pydantic callers use. Constraints are declared with ``Annotated[int, Meta(ge=1)]``; checks across
keys go in ``__post_init__`` (raise ValueError naming the key).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, ClassVar, Self

import msgspec
import msgspec.structs

#: msgspec's "... - at `$.key[0]`" suffix: the path of the value that did not fit.
_AT = re.compile(r"^(?P<msg>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.S)
_UNKNOWN = re.compile(r"^Object contains unknown field `(?P<key>[^`]*)`(?P<rest>.*)$", re.S)


class OptionsError(ValueError):
    """A config section does not fit its declaration: ``[section.key] detail`` (key '' for the whole section)."""

    def __init__(self, section: str, key: str, detail: str) -> None:
        super().__init__(f"[{section}.{key}] {detail}" if key else f"[{section}] {detail}")
        self.section, self.key, self.detail = section, key, detail


def _dec_hook(kind: type, value: Any) -> Any:
    """Types msgspec does not convert by itself (paths from TOML strings)."""
    if kind is Path and isinstance(value, str | Path):
        return Path(value)
    raise NotImplementedError(f"expected {kind.__name__}, got {type(value).__name__}")


def problem(exc: msgspec.ValidationError, section: str) -> OptionsError:
    """msgspec's error naming the key (from its ``$.key`` path); a check's own ``[section.key] ...`` kept."""
    text = str(exc)
    unknown = _UNKNOWN.match(text)
    if unknown:
        at = _AT.match(unknown["rest"])
        where = ((at["path"] or "") if at else "").lstrip(".")
        return OptionsError(
            section, ".".join(filter(None, (where, unknown["key"]))), "unknown key (not allowed here)"
        )
    m = _AT.match(text)
    msg, path = (m["msg"], m["path"] or "") if m else (text, "")
    own = re.match(r"^\[(?P<where>[^\]]*)\] (?P<detail>.*)$", msg, re.S)
    if own:  # a check of its own (__post_init__) names the key
        where = own["where"]
        key = where[len(section) + 1 :] if where.startswith(section + ".") else ""
        return OptionsError(section, key, own["detail"])
    return OptionsError(section, re.sub(r"\[[^\]]*\]", "", path).lstrip("."), msg)  # labels[...] -> labels


class Options(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Base of a config section: ``model_validate(dict)`` checks and converts (strings from the environment
    too: ``"2.5"`` -> 2.5, ``"false"`` -> False); keyword construction takes values as they are."""

    #: shown in error messages: ``[section.key]``
    section: ClassVar[str] = "options"

    @classmethod
    def model_validate(cls, data: Any, section: str | None = None) -> Self:
        """The section from a dict (or itself); OptionsError naming the key that does not fit."""
        if isinstance(data, cls):
            return data
        try:
            return msgspec.convert(data, cls, strict=False, dec_hook=_dec_hook)
        except msgspec.ValidationError as exc:
            raise problem(exc, section or cls.section) from None

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        """Every key the section declares."""
        return cls.__struct_fields__

    def model_copy(self, update: dict[str, Any] | None = None) -> Self:
        """A copy with some keys replaced (taken as they are, like keyword construction)."""
        return msgspec.structs.replace(self, **(update or {}))

    def model_dump(self, exclude: set[str] | frozenset[str] = frozenset()) -> dict[str, Any]:
        """The section as a dict of its values (containers copied)."""
        out = {}
        for name in self.__struct_fields__:
            if name in exclude:
                continue
            v = getattr(self, name)
            out[name] = (
                {k: dict(x) if isinstance(x, dict) else x for k, x in v.items()}
                if isinstance(v, dict)
                else (list(v) if isinstance(v, list) else v)
            )
        return out


class _FieldNames:
    """``Cls.model_fields``: the declared keys (a dict, as pydantic callers expect to iterate it)."""

    def __get__(self, obj: Any, owner: type[Options]) -> dict[str, None]:
        return dict.fromkeys(owner.__struct_fields__)


Options.model_fields = _FieldNames()  # type: ignore[attr-defined]
