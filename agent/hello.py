"""Protobuf messages from inventory dicts: a value a field cannot hold is dropped, never fatal."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, TypeVar

from google.protobuf.message import Message

log = logging.getLogger("c4.agent.hello")
M = TypeVar("M", bound=Message)


def build_message(cls: type[M], values: Mapping[str, Any], warned: set[str]) -> M:
    """``cls`` with every field of ``values`` it declares; a value out of the field's range or of the
    wrong type (a 10^23 Gb/s rate in a uint64) is left unset and logged once per field (``warned``
    holds the fields already logged). Keys the message does not declare are ignored."""
    msg = cls()
    fields = cls.DESCRIPTOR.fields_by_name
    for key, value in values.items():
        if key not in fields or value is None:
            continue
        try:
            setattr(msg, key, value)
        except (ValueError, TypeError, OverflowError) as exc:
            name = f"{cls.DESCRIPTOR.name}.{key}"
            if name not in warned:
                warned.add(name)
                log.warning(
                    "inventory value dropped from Hello field=%s value=%.80r reason=%s", name, value, exc
                )
    return msg
