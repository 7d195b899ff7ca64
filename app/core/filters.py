"""The ``where`` filter language: validation, compilation to SQL, and a Python evaluator.

Pure functions, no I/O. Semantics (shared by the SQL compiler and ``predicate``):

- ``{"f": v}`` / ``{"f": {"$eq": v}}`` with a scalar ``v``: ``None`` matches a missing or null
  field; a bool matches that bool; a number matches an equal number (never a bool); a string
  matches an equal string.
- ``$ne`` is the negation of ``$eq`` (so it also matches a missing field).
- ``$gt/$gte/$lt/$lte`` take a number or a string and match only fields of the same kind.
- ``$in`` matches when ``$eq`` matches one of the listed scalars; ``$nin`` is its negation.
- ``$and`` / ``$or`` take non-empty lists of filters; several keys in one dict are ANDed.
- Field names are dotted paths of segments ``[A-Za-z0-9_-]+``; they are validated and quoted,
  values are always bound parameters.
- Integers must lie in the signed 64-bit range (SQLite's), else ``InvalidInput``.

Lists of any length work: an ``$in``/``$nin`` list of ``LARGE_LIST`` or more values binds its
strings and its numbers as one JSON array parameter each (``IN (SELECT value FROM
json_each(?))``), so neither SQLite's parameter limit nor its expression depth is reached;
``$and``/``$or`` lists (and the keys of one object) are joined as balanced trees (depth
``log2(n)``); in a long ``$or`` (``$and``), nested lists of the same operator are flattened
and equalities (``$ne``s) on one field merged into one ``$in`` (``$nin``). A
filter that would still need more than ``MAX_PARAMS`` parameters raises ``InvalidInput``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import orjson

from app.core.errors import InvalidInput

SEGMENT = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]{0,63}")
MAX_FILTER_DEPTH = 32
COMPARE_OPS = {"$gt": ">", "$gte": ">=", "$lt": "<", "$lte": "<="}
FIELD_OPS = {"$eq", "$ne", "$in", "$nin", *COMPARE_OPS}
Scalar = str | int | float | bool | None
INT_MIN = -(2**63)
INT_MAX = 2**63 - 1
LARGE_LIST = 16
MAX_PARAMS = 30_000


def field_path(field: object, argument: str = "where") -> tuple[str, ...]:
    """Validate a dotted field path and return its segments."""
    if not isinstance(field, str) or not field:
        raise InvalidInput(f"{argument}: field names must be non-empty strings")
    parts = tuple(field.split("."))
    if len(parts) > 16 or not all(SEGMENT.fullmatch(p) for p in parts):
        raise InvalidInput(f"{argument}: invalid field path {field[:80]!r}")
    return parts


def json_path(parts: Sequence[str]) -> str:
    """SQLite JSON path literal for validated segments (safe to splice: pattern-checked)."""
    return "$" + "".join(f'."{p}"' for p in parts)


def field_expr(parts: Sequence[str]) -> str:
    """The SQL expression of a field; identical text is used for expression indexes."""
    return f"json_extract(data, '{json_path(parts)}')"


def _type_expr(parts: Sequence[str]) -> str:
    return f"json_type(data, '{json_path(parts)}')"


def is_utf8(value: str) -> bool:
    """False for a string holding lone surrogates (it cannot be stored nor bound)."""
    if value.isascii():
        return True
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _scalar(value: object, argument: str) -> Scalar:
    if isinstance(value, str):
        if not is_utf8(value):
            raise InvalidInput(f"{argument}: strings must be valid Unicode (no lone surrogates)")
        return value
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        if not INT_MIN <= value <= INT_MAX:
            raise InvalidInput(
                f"{argument}: integers in filters must be within the signed 64-bit range"
            )
        return value
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise InvalidInput(f"{argument}: filter values must be finite numbers")
        return value
    raise InvalidInput(f"{argument}: filter values must be strings, numbers, booleans or null")


def _eq_sql(parts: Sequence[str], value: Scalar, params: list[Any]) -> str:
    """SQL for ``field == value`` with the evaluator's type rules.

    ``json_extract`` returns objects and arrays as JSON text and booleans as 1/0, so a type
    guard (``json_type``, which re-parses the row) is added only where such a value could
    compare equal: strings that look like JSON containers, and the numbers 0 and 1.
    """
    expr = field_expr(parts)
    if value is None:
        return f"({expr} IS NULL)"
    if isinstance(value, bool):
        return f"({_type_expr(parts)} = '{'true' if value else 'false'}')"
    params.append(value)
    if isinstance(value, str):
        if tuple(parts) == ("id",):
            return "(id = ?)"
        if value[:1] in ("{", "["):
            return f"({expr} = ? AND {_type_expr(parts)} = 'text')"
        return f"({expr} = ?)"
    if value in (0, 1):
        return f"({expr} = ? AND {_type_expr(parts)} IN ('integer', 'real'))"
    return f"({expr} = ?)"


def _satisfies(candidate: str | int, ranges: list[tuple[str, Any]]) -> bool:
    return all(_cmp(candidate, op, v) for op, v in ranges)


def _string_range_may_hold_container(ranges: list[tuple[str, Any]]) -> bool:
    """Could a JSON text starting with ``[`` or ``{`` satisfy every string bound?"""
    for first in ("[", "{"):
        upper_ok = all(
            (first < v if op == "$lt" else first <= v) for op, v in ranges if op in ("$lt", "$lte")
        )
        after = chr(ord(first) + 1)
        lower_ok = all(v < after for op, v in ranges if op in ("$gt", "$gte"))
        if upper_ok and lower_ok:
            return True
    return False


def _range_sql(parts: Sequence[str], ranges: list[tuple[str, Any]], params: list[Any]) -> str:
    """SQL for the comparison operators of one field (all of one kind: numbers or strings).

    ``typeof`` of the indexed expression is read from the index (cheap); the ``json_type``
    guard that tells booleans and containers apart re-parses the row, so it is added only when
    a boolean (1/0) or a container's JSON text could satisfy every bound.
    """
    expr = field_expr(parts)
    clauses = []
    for op, value in ranges:
        params.append(value)
        clauses.append(f"{expr} {COMPARE_OPS[op]} ?")
    if isinstance(ranges[0][1], str):
        clauses.append(f"typeof({expr}) = 'text'")
        if _string_range_may_hold_container(ranges):
            clauses.append(f"{_type_expr(parts)} = 'text'")
    else:
        clauses.append(f"typeof({expr}) IN ('integer', 'real')")
        if _satisfies(0, ranges) or _satisfies(1, ranges):
            clauses.append(f"{_type_expr(parts)} IN ('integer', 'real')")
    return "(" + " AND ".join(clauses) + ")"


def _field_sql(field: str, cond: object, params: list[Any], argument: str) -> str:
    parts = field_path(field, argument)
    if not isinstance(cond, Mapping):
        return _eq_sql(parts, _scalar(cond, argument), params)
    if not cond:
        raise InvalidInput(f"{argument}: empty operator object for field {field[:80]!r}")
    clauses = []
    numbers: list[tuple[str, Any]] = []
    strings: list[tuple[str, Any]] = []
    for op, value in cond.items():
        if op not in FIELD_OPS:
            raise InvalidInput(f"{argument}: unknown operator {str(op)[:40]!r}")
        if op == "$eq":
            clauses.append(_eq_sql(parts, _scalar(value, argument), params))
        elif op == "$ne":
            clauses.append(f"({_eq_sql(parts, _scalar(value, argument), params)} IS NOT 1)")
        elif op in ("$in", "$nin"):
            if not isinstance(value, list | tuple):
                raise InvalidInput(f"{argument}: {op} takes a list")
            any_sql = _in_sql(parts, [_scalar(v, argument) for v in value], params, argument)
            clauses.append(any_sql if op == "$in" else f"({any_sql} IS NOT 1)")
        else:
            scalar = _scalar(value, argument)
            if scalar is None or isinstance(scalar, bool):
                raise InvalidInput(f"{argument}: {op} takes a number or a string")
            (strings if isinstance(scalar, str) else numbers).append((op, scalar))
    if numbers and strings:
        clauses.append("(0)")  # no value is both a number and a string
    elif numbers or strings:
        clauses.append(_range_sql(parts, numbers or strings, params))
    return _join(clauses, " AND ")


def _join(clauses: list[str], joiner: str) -> str:
    """``clauses`` joined as a balanced tree, so a long list never nests deeply in SQL."""
    if len(clauses) <= 8:
        return "(" + joiner.join(clauses) + ")"
    mid = len(clauses) // 2
    return "(" + _join(clauses[:mid], joiner) + joiner + _join(clauses[mid:], joiner) + ")"


def _json_param(values: list[Any], argument: str) -> str:
    try:
        return orjson.dumps(values).decode()
    except orjson.JSONEncodeError as exc:
        raise InvalidInput(f"{argument}: {exc}") from None


def _in_sql(parts: Sequence[str], values: list[Scalar], params: list[Any], argument: str) -> str:
    """SQL for "``$eq`` matches one of ``values``" (see the module docstring for long lists)."""
    if len(values) < LARGE_LIST:
        return _join([_eq_sql(parts, v, params) for v in values], " OR ") if values else "(0)"
    alts: list[str] = []
    if any(v is None for v in values):
        alts.append(_eq_sql(parts, None, params))
    for flag in (False, True):
        if any(v is flag for v in values):
            alts.append(_eq_sql(parts, flag, params))
    strings = list(dict.fromkeys(v for v in values if isinstance(v, str)))
    numbers = list(
        dict.fromkeys(v for v in values if isinstance(v, int | float) and not isinstance(v, bool))
    )
    expr = field_expr(parts)
    if strings:
        params.append(_json_param(strings, argument))
        if tuple(parts) == ("id",):
            alts.append("(id IN (SELECT value FROM json_each(?)))")
        elif any(v[:1] in ("{", "[") for v in strings):
            alts.append(
                f"({expr} IN (SELECT value FROM json_each(?)) AND {_type_expr(parts)} = 'text')"
            )
        else:
            alts.append(f"({expr} IN (SELECT value FROM json_each(?)))")
    if numbers:
        params.append(_json_param(numbers, argument))
        guard = any(v in (0, 1) for v in numbers)
        alts.append(
            f"({expr} IN (SELECT value FROM json_each(?))"
            + (f" AND {_type_expr(parts)} IN ('integer', 'real'))" if guard else ")")
        )
    return _join(alts, " OR ")


def _equality(branch: object, negated: bool) -> tuple[str, list[Any]] | None:
    """``(field, values)`` when ``branch`` is one equality or ``$in`` on one field (with
    ``negated``: one ``$ne`` or ``$nin``)."""
    if not isinstance(branch, Mapping) or len(branch) != 1:
        return None
    ((key, cond),) = branch.items()
    if not isinstance(key, str) or key.startswith("$"):
        return None
    if not isinstance(cond, Mapping):
        if negated or isinstance(cond, list | tuple):
            return None
        return key, [cond]
    if len(cond) != 1:
        return None
    ((op, value),) = cond.items()
    one, many = ("$ne", "$nin") if negated else ("$eq", "$in")
    if op == one and not isinstance(value, Mapping | list | tuple):
        return key, [value]
    if op == many and isinstance(value, list | tuple):
        return key, list(value)
    return None


def _list_groups(key: str, branches: Sequence[object]) -> tuple[dict[str, list[Any]], list[object]]:
    """A long ``$or`` (``$and``) as ``({field: values}, other branches)``: nested lists of the
    same operator are flattened, and equalities (``$ne``s) on one field merged into one
    ``$in`` (``$nin``) of that field: the same set of records."""
    groups: dict[str, list[Any]] = {}
    others: list[object] = []
    stack = list(reversed(branches))
    while stack:
        branch = stack.pop()
        if (
            isinstance(branch, Mapping)
            and len(branch) == 1
            and isinstance(branch.get(key), list | tuple)
            and branch[key]
        ):
            stack.extend(reversed(branch[key]))
            continue
        eq = _equality(branch, negated=key == "$and")
        if eq is None:
            others.append(branch)
        else:
            groups.setdefault(eq[0], []).extend(eq[1])
    return groups, others


def _where_sql(where: object, params: list[Any], argument: str, depth: int) -> str:
    if depth > MAX_FILTER_DEPTH:
        raise InvalidInput(f"{argument}: filter nested too deeply")
    if not isinstance(where, Mapping):
        raise InvalidInput(f"{argument}: a filter must be an object")
    clauses = []
    for key, cond in where.items():
        if key in ("$and", "$or"):
            if not isinstance(cond, list | tuple) or not cond:
                raise InvalidInput(f"{argument}: {key} takes a non-empty list of filters")
            if len(cond) >= LARGE_LIST:
                groups, others = _list_groups(key, cond)
                subs = [
                    _in_sql(field_path(f, argument), [_scalar(v, argument) for v in vs], params, a)
                    for f, vs in groups.items()
                    for a in (argument,)
                ]
                if key == "$and":
                    subs = [f"({sub} IS NOT 1)" for sub in subs]
                subs += [_where_sql(c, params, argument, depth + 1) for c in others]
                clauses.append(_join(subs, " AND " if key == "$and" else " OR "))
                continue
            subs = [_where_sql(c, params, argument, depth + 1) for c in cond]
            clauses.append(_join(subs, " AND " if key == "$and" else " OR "))
        elif isinstance(key, str) and key.startswith("$"):
            raise InvalidInput(f"{argument}: unknown operator {key[:40]!r}")
        else:
            clauses.append(_field_sql(key, cond, params, argument))
    return _join(clauses, " AND ") if clauses else "(1)"


def compile_where(
    where: Mapping[str, Any] | None, argument: str = "where"
) -> tuple[str, list[Any]]:
    """Compile a filter to an SQL boolean expression over column ``data`` and its parameters."""
    params: list[Any] = []
    if where is None:
        return "(1)", params
    sql = _where_sql(where, params, argument, 0)
    if len(params) > MAX_PARAMS:
        raise InvalidInput(
            f"{argument}: the filter needs {len(params):,} values bound (at most {MAX_PARAMS:,});"
            " express long lists of equalities as $in"
        )
    return sql, params


def compile_order(order_by: str | Sequence[str] | None, argument: str = "order_by") -> str:
    """Compile ``order_by`` to an SQL ORDER BY list.

    Ties are broken by commit order (``pos``) in the direction of the last key, so sorting by
    ``"-f"`` gives exactly the reverse of sorting by ``"f"``, and an index on the sort keys
    (whose entries end with the row's ``pos``) delivers the order without a sort step.
    """
    if order_by is None:
        return "pos"
    if not isinstance(order_by, str | list | tuple):
        raise InvalidInput(f"{argument}: expected a field name or a list of field names")
    keys = [order_by] if isinstance(order_by, str) else list(order_by)
    if not all(isinstance(k, str) for k in keys):
        raise InvalidInput(f"{argument}: expected a field name or a list of field names")
    if not keys:
        raise InvalidInput(f"{argument}: expected at least one field name")
    terms = []
    desc = False
    for key in keys:
        desc = key.startswith("-")
        parts = field_path(key[1:] if desc else key, argument)
        terms.append(f"{field_expr(parts)} {'DESC' if desc else 'ASC'}")
    return ", ".join([*terms, "pos DESC" if desc else "pos ASC"])


# --- the Python evaluator (checks records read back against their filter) ---------------

_MISSING = object()


def _get(record: Mapping[str, Any], parts: Sequence[str]) -> Any:
    cur: Any = record
    for p in parts:
        if not isinstance(cur, Mapping) or p not in cur:
            return _MISSING
        cur = cur[p]
    return cur


def _sql_number(a: Any) -> Any:
    """A number as SQLite sees it: an integer outside the signed 64-bit range (only possible
    in data written before v2 refused them) is a float there, and so it is here."""
    return float(a) if type(a) is int and not INT_MIN <= a <= INT_MAX else a


def _cmp(actual: Any, op: str, value: str | int | float) -> bool:
    if isinstance(value, str):
        if not isinstance(actual, str):
            return False
    elif not isinstance(actual, int | float) or isinstance(actual, bool):
        return False
    else:
        actual = _sql_number(actual)
    if op == "$gt":
        return bool(actual > value)
    if op == "$gte":
        return bool(actual >= value)
    if op == "$lt":
        return bool(actual < value)
    return bool(actual <= value)


Predicate = Callable[[Mapping[str, Any]], bool]


def predicate(where: Mapping[str, Any]) -> Predicate:
    """A validated filter as a Python function: the same semantics as the SQL, built once
    (each operator specialised on its value) so checking a record is a few calls."""
    tests: list[Predicate] = []
    for key, cond in where.items():
        if key in ("$and", "$or") and len(cond) >= LARGE_LIST:
            groups, others = _list_groups(key, cond)
            op = "$nin" if key == "$and" else "$in"
            alts = [_field_predicate(f, {op: vs}) for f, vs in groups.items()]
            alts += [predicate(c) for c in others if isinstance(c, Mapping)]
            tests.append(_all(alts) if key == "$and" else _any(alts))
        elif key in ("$and", "$or"):
            subs = [predicate(c) for c in cond]
            tests.append(_all(subs) if key == "$and" else _any(subs))
        else:
            tests.append(_field_predicate(key, cond))
    return _all(tests)


def _any(tests: list[Predicate]) -> Predicate:
    return lambda r: any(t(r) for t in tests)


def _all(tests: list[Predicate]) -> Predicate:
    if len(tests) == 1:
        return tests[0]
    if len(tests) == 2:
        first, second = tests
        return lambda r: first(r) and second(r)
    return lambda r: all(t(r) for t in tests)


Check = Callable[[Any], bool]


def _is_number(a: Any) -> bool:
    t = type(a)
    return t is int or t is float


def _is_text(a: Any) -> bool:
    return type(a) is str


def _eq_check(value: Any) -> Check:
    if value is None:
        return lambda a: a is None or a is _MISSING
    if isinstance(value, bool):
        return lambda a: a is value
    if isinstance(value, str):
        return lambda a: type(a) is str and a == value
    return lambda a: _is_number(a) and _sql_number(a) == value


def _in_check(values: Sequence[Any]) -> Check:
    """``$in``: set lookups by kind (a long list costs no more than a short one)."""
    if len(values) < LARGE_LIST:
        alts = [_eq_check(v) for v in values]
        return lambda a: any(c(a) for c in alts)
    strings = frozenset(v for v in values if type(v) is str)
    numbers = frozenset(v for v in values if type(v) is int or type(v) is float)
    null = any(v is None for v in values)
    true = any(v is True for v in values)
    false = any(v is False for v in values)

    def check(a: Any) -> bool:
        t = type(a)
        if t is str:
            return a in strings
        if t is int or t is float:
            return _sql_number(a) in numbers
        if a is None or a is _MISSING:
            return null
        if a is True:
            return true
        if a is False:
            return false
        return False

    return check


def _op_check(op: str, value: Any) -> Check:
    if op == "$eq":
        return _eq_check(value)
    if op == "$ne":
        eq = _eq_check(value)
        return lambda a: not eq(a)
    if op in ("$in", "$nin"):
        found = _in_check(value)
        if op == "$in":
            return found
        return lambda a: not found(a)
    if isinstance(value, str):
        if op == "$gt":
            return lambda a: _is_text(a) and a > value
        if op == "$gte":
            return lambda a: _is_text(a) and a >= value
        if op == "$lt":
            return lambda a: _is_text(a) and a < value
        return lambda a: _is_text(a) and a <= value
    if op == "$gt":
        return lambda a: _is_number(a) and _sql_number(a) > value
    if op == "$gte":
        return lambda a: _is_number(a) and _sql_number(a) >= value
    if op == "$lt":
        return lambda a: _is_number(a) and _sql_number(a) < value
    return lambda a: _is_number(a) and _sql_number(a) <= value


def _field_predicate(key: str, cond: Any) -> Predicate:
    parts = key.split(".")
    checks = (
        [_op_check(op, v) for op, v in cond.items()]
        if isinstance(cond, Mapping)
        else [_eq_check(cond)]
    )
    if len(parts) == 1:
        field = parts[0]
        if len(checks) == 1:
            (c0,) = checks
            return lambda r: c0(r.get(field, _MISSING))
        if len(checks) == 2:
            c0, c1 = checks
            return lambda r: c0(a := r.get(field, _MISSING)) and c1(a)
    return lambda r: all(c(a) for a in (_get(r, parts),) for c in checks)
