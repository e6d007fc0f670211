"""Fast pickling for the pipeline's slotted dataclasses.

Items cross processes (a flow of several processes exchanges them between workers), go into
Bytewax's recovery snapshots and into the spool. For a ``slots=True`` dataclass, Python 3.11
generates ``__getstate__``/``__setstate__`` that call ``dataclasses.fields()`` on every object:
a ChangeEvent cost about 32 µs to pickle and 28 µs to unpickle, most of it there.
`pickled_by_fields` makes pickle (and copy) store the constructor call instead: the class
and its field values in order, read by one C-level attrgetter. Pickles made before still load:
the generated ``__setstate__`` stays.
"""

from __future__ import annotations

import dataclasses
import inspect
from operator import attrgetter
from typing import Any, TypeVar

__all__ = ["pickled_by_fields"]

T = TypeVar("T", bound=type)


def pickled_by_fields(cls: T) -> T:
    """CLS (a dataclass whose __init__ takes every field, in field order) pickled as
    ``cls(*fields)``. Apply above @dataclass: slots=True makes a new class."""
    fields = dataclasses.fields(cls)
    if any(not f.init or f.kw_only for f in fields):
        raise TypeError(f"{cls.__name__}: every field must be a positional __init__ parameter")
    names = tuple(f.name for f in fields)
    # A hand-written __init__ (ChangeEvent's) must take the fields in the same order.
    parameters = tuple(inspect.signature(cls.__init__).parameters)[1:]
    if parameters != names:
        raise TypeError(f"{cls.__name__}: __init__ takes {parameters}, the fields are {names}")
    values = attrgetter(*names)
    if len(names) == 1:
        def __reduce__(self: Any) -> tuple:
            return cls, (values(self),)
    else:
        def __reduce__(self: Any) -> tuple:
            return cls, values(self)
    cls.__reduce__ = __reduce__  # type: ignore[method-assign]
    return cls
