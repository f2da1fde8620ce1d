"""Per-kart state as a table: one :class:`Column` line per quantity makes its array, its reset and its
field in the named record the numba kernels take.

    KART_COLUMNS = Columns("KartArrays", __name__, [Column("x", np.float64, doc="..."), ...])
    KartArrays = KART_COLUMNS.record   # module-level, so that numba's cache and pickle find the class
    arrays = KART_COLUMNS.allocate(n)  # a KartArrays of arrays of n karts
    KART_COLUMNS.reset(arrays, idx)    # every column with a reset value, at karts ``idx``
    KART_COLUMNS.attach(state, arrays) # ``state.x`` is ``arrays.x`` (a class with ``ColumnOwner``)

A record is a namedtuple of arrays: numba compiles a kernel taking it once (its type is the field
types), and ``record.x`` in a kernel costs nothing. Kernels are called with ``tuple(record)`` and
name it again on entry (``ks = KartArrays(*ks)``): numba checks a plain tuple's argument types in C,
a namedtuple's in Python (a microsecond more per call of an env step's kernels). Each array costs
a call ~60 ns, so a kernel that reads a few columns of a big table takes a :class:`View` of them.

The attached attributes are plain instance attributes (the fastest to read) that
:class:`ColumnOwner` refuses to rebind, so an array is never replaced behind a kernel's back (write
into it: ``state.x[:] = ...``).
"""

from __future__ import annotations

import collections
import operator
from typing import Any, Callable, Iterable, NamedTuple

import numpy as np

__all__ = ["Column", "Columns", "ColumnOwner", "View"]


class Column(NamedTuple):
    """One per-kart quantity."""

    name: str
    dtype: Any
    reset: Any = None
    """The value :meth:`Columns.reset` writes; None: reset leaves it (its owner sets it)."""
    init: Any = None
    """The value at allocation: a number, a function of the kart count returning the array (``np.arange``:
    each kart's index), or None: the reset value (0 without one)."""
    doc: str = ""
    shape: tuple[int, ...] = ()
    """Per-kart shape: () for one value per kart, (k,) for k values per kart (an (n, k) array)."""


class Columns:
    """A table of columns and the namedtuple record type holding their arrays."""

    def __init__(self, record: str, module: str, columns: Iterable[Column]) -> None:
        self.columns = tuple(columns)
        self.names = tuple(c.name for c in self.columns)
        self.record = collections.namedtuple(record, self.names, module=module)

    def allocate(self, n: int) -> Any:
        """A record of freshly allocated arrays for ``n`` karts, at their initial values."""
        return self.record(*(_allocate(c, n) for c in self.columns))

    def reset(self, arrays: Any, idx: np.ndarray | slice) -> None:
        """Write every column's reset value at karts ``idx``."""
        for c, a in zip(self.columns, arrays):
            if c.reset is not None:
                a[idx] = c.reset

    def attach(self, owner: "ColumnOwner", arrays: Any) -> None:
        """Make each of ``arrays`` an attribute of ``owner`` under its column's name."""
        # object.__setattr__, never owner.__dict__: touching the dict makes every attribute read slower
        object.__setattr__(owner, "_column_names", owner._column_names | set(self.names))
        for name, array in zip(self.names, arrays):
            object.__setattr__(owner, name, array)


class View:
    """Some columns of a table as their own record type, for a kernel that reads only those."""

    def __init__(self, record: str, module: str, names: Iterable[str]) -> None:
        self.record = collections.namedtuple(record, tuple(names), module=module)
        self.of: Callable[[Any], tuple] = operator.attrgetter(*self.record._fields)
        """``view.of(owner)``: the owner's arrays of these columns, as the plain tuple a kernel takes."""


class ColumnOwner:
    """A class whose attached column arrays cannot be rebound (only written into)."""

    _column_names: frozenset[str] = frozenset()

    def __setattr__(self, name: str, value: Any) -> None:
        if name in self._column_names and value is not getattr(self, name):  # `a |= b` sets a itself: fine
            raise AttributeError(f"{type(self).__name__}.{name} is a per-kart array that kernels hold: "
                                 f"write into it ({name}[...] = value) instead of rebinding it")
        object.__setattr__(self, name, value)


def _allocate(c: Column, n: int) -> np.ndarray:
    if callable(c.init):
        make: Callable[[int], np.ndarray] = c.init
        return np.ascontiguousarray(make(n), dtype=c.dtype)
    value = c.init if c.init is not None else (c.reset if c.reset is not None else 0)
    return np.full((n, *c.shape), value, dtype=c.dtype)
