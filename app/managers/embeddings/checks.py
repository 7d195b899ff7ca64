"""Input checks of embedding sets: the always-on preconditions of ``EmbeddingStore`` on its
arrays (the rules of its other arguments are in ``app.core.rules``).

Each raises ``InvalidInput`` naming the argument, vectorised (one ``np.isfinite(...).all()``
per array), before anything is written.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from app.core.errors import InvalidInput
from app.core.rules import MAX_ID_CHARS
from app.formats.setmeta import DTYPES

Array = np.ndarray[Any, Any]


def as_matrix(vectors: object, *, check: bool = True) -> Array:
    """``vectors`` as a native-endian C-contiguous 2-D float16/32/64 array of finite values
    (``check=False``: the caller's precondition already checked the values)."""
    if isinstance(vectors, np.ndarray):
        arr = vectors
    else:
        try:
            arr = np.asarray(vectors)
        except (ValueError, TypeError) as exc:
            raise InvalidInput(f"vectors: not an array ({str(exc)[:80]})") from None
    if arr.ndim != 2:
        raise InvalidInput(f"vectors: expected a 2-D array (rows x dim), got {arr.ndim}-D")
    if arr.dtype.kind != "f" or arr.dtype.name not in DTYPES:
        raise InvalidInput(f"vectors: dtype {arr.dtype} is not one of {', '.join(DTYPES)}")
    if arr.shape[1] < 1:
        raise InvalidInput("vectors: dimension must be at least 1")
    if not arr.dtype.isnative:
        arr = arr.astype(arr.dtype.newbyteorder("="))
    arr = np.ascontiguousarray(arr)
    if check and not all_finite(arr):
        raise InvalidInput("vectors: contains NaN or infinite values")
    return arr


def _id_sequence(ids: object, rows: int) -> None:
    if isinstance(ids, np.ndarray):
        if ids.ndim != 1 or ids.dtype.kind != "U":
            raise InvalidInput("ids: a numpy array of ids must be 1-D with a str dtype")
    elif not isinstance(ids, Sequence) or isinstance(ids, str | bytes):
        raise InvalidInput("ids: expected a sequence (list, tuple, numpy array) of str")
    if len(ids) != rows:
        raise InvalidInput(f"ids: {len(ids)} ids for {rows} rows of vectors")


def check_ids(ids: object, rows: int) -> None:
    """``ids`` must be ``rows`` unique strings of 1-256 characters without NUL."""
    _id_sequence(ids, rows)
    assert isinstance(ids, Sequence | np.ndarray)
    items: Sequence[Any] = ids.tolist() if isinstance(ids, np.ndarray) else ids
    if not rows:
        return
    if not set(map(type, items)) <= {str} and not all(isinstance(i, str) for i in items):
        raise InvalidInput("ids: every id must be a str")
    if min(map(len, items)) < 1 or max(map(len, items)) > MAX_ID_CHARS:
        raise InvalidInput(f"ids: every id must have 1-{MAX_ID_CHARS} characters")
    if "\x00" in "".join(items):
        raise InvalidInput("ids: ids must not contain NUL characters")
    if len(set(items)) != rows:
        raise InvalidInput("ids: duplicate ids in this save")


def all_finite(arr: Array) -> bool:
    """No NaN or infinity in ``arr``: a finite sum proves it (NaN and inf propagate);
    otherwise (or on overflow) the exact element-wise check decides."""
    with np.errstate(over="ignore", invalid="ignore"):
        if np.isfinite(arr.sum()):
            return True
    return bool(np.isfinite(arr).all())


def as_ids(ids: object, rows: int) -> Array:
    """Checked ``ids`` as a 1-D unicode array (no copy for a numpy str array)."""
    _id_sequence(ids, rows)
    if isinstance(ids, np.ndarray):
        return ids
    return np.asarray(ids, dtype=str) if rows else np.empty(0, dtype="<U1")


def check_rows(ids: object, vectors: object) -> bool:
    """Precondition helper: raises ``InvalidInput`` naming the bad argument, else True."""
    check_ids(ids, as_matrix(vectors).shape[0])
    return True


def check_query(query: object) -> bool:
    """Precondition helper for ``search``: a finite 1-D or 2-D real array."""
    as_queries(query)
    return True


def as_queries(query: object) -> Array:
    """``query`` as a 2-D array (one row per query) of finite reals."""
    try:
        arr = np.asarray(query)
    except (ValueError, TypeError) as exc:
        raise InvalidInput(f"query: not an array ({str(exc)[:80]})") from None
    if arr.ndim not in (1, 2):
        raise InvalidInput(f"query: expected a 1-D vector or a 2-D array, got {arr.ndim}-D")
    if arr.dtype.kind not in "fiu" or arr.dtype.name in ("float128", "longdouble"):
        raise InvalidInput(f"query: dtype {arr.dtype} is not a real number type")
    if not all_finite(arr):
        raise InvalidInput("query: contains NaN or infinite values")
    return arr.reshape(1, -1) if arr.ndim == 1 else arr
