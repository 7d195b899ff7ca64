"""The ``where`` language (docs/api.md, "Filters (`where`)") compiled to PostgreSQL.

The record lives in one ``jsonb`` column (``doc`` by default) and commit order in an integer
column (``seq``). The semantics are exactly those of the SQLite compiler and of the reference
evaluator in :mod:`app.core.filters` (validation is shared with it):

- a field is read with chained ``->`` on text keys, so a path through an array or a scalar is
  missing (as with SQLite's quoted JSON paths), never an array index;
- ``None`` matches a missing field or a JSON null; booleans match only booleans (``jsonb``
  equality never makes ``true`` equal ``1``); numbers compare as ``numeric`` (exact: integers
  beyond float precision keep every digit; a float is bound as the decimal text of its
  ``repr``, the text the record itself was stored from);
- ranges compare like with like (a ``jsonb_typeof`` guard) and strings compare bytewise
  (``COLLATE "C"``: UTF-8 byte order = code point order, SQLite's BINARY collation);
- ``$in``/``$nin`` bind their strings and their numbers as one array parameter each, so a
  list of any length costs two parameters; long ``$and``/``$or`` lists are flattened and
  their equalities merged exactly as the SQLite compiler does.

Every value is a bound parameter (``%s`` placeholders for psycopg); only validated field path
segments (``[A-Za-z0-9_-]``) and the validated column names are spliced into the SQL text.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

from app.core.errors import InvalidInput
from app.core.filters import (
    COMPARE_OPS,
    FIELD_OPS,
    LARGE_LIST,
    MAX_FILTER_DEPTH,
    MAX_PARAMS,
    Scalar,
    _list_groups,
    _scalar,
    field_path,
)

COLUMN = re.compile(r"[a-z_][a-z0-9_]{0,62}")
TRUE = "TRUE"
FALSE = "FALSE"


def column_name(name: str, argument: str = "column") -> str:
    """A validated, double-quoted column name."""
    if not isinstance(name, str) or not COLUMN.fullmatch(name):
        raise InvalidInput(f"{argument}: invalid column name {str(name)[:80]!r}")
    return f'"{name}"'


def field_expr_pg(parts: Sequence[str], column: str = "doc") -> str:
    """The ``jsonb`` expression of a field (SQL NULL when missing); usable in an index."""
    return "(" + column_name(column) + "".join(f" -> '{p}'::text" for p in parts) + ")"


def _number(value: int | float) -> int | Decimal:
    """A number bound exactly: a float as the decimal text of its ``repr``."""
    return Decimal(repr(value)) if isinstance(value, float) else value


def _eq_sql(x: str, value: Scalar, params: list[Any]) -> str:
    """``field == value``; never SQL NULL."""
    # ``x IS NOT NULL AND x = v``: never NULL, and its ``x = v`` conjunct is what an
    # expression index on ``x`` serves (``IS NOT DISTINCT FROM`` is never indexable).
    if value is None:
        return f"({x} IS NULL OR jsonb_typeof({x}) = 'null')"
    if isinstance(value, bool):
        return f"({x} IS NOT NULL AND {x} = '{'true' if value else 'false'}'::jsonb)"
    if isinstance(value, str):
        params.append(value)
        return f"({x} IS NOT NULL AND {x} = to_jsonb(%s::text))"
    params.append(_number(value))
    return f"({x} IS NOT NULL AND {x} = to_jsonb(%s::numeric))"


def _in_sql(x: str, values: Sequence[Scalar], params: list[Any]) -> str:
    """ "``$eq`` matches one of ``values``"; never SQL NULL; two parameters at most."""
    if not values:
        return FALSE
    if len(values) < LARGE_LIST:
        return "(" + " OR ".join(_eq_sql(x, v, params) for v in values) + ")"
    alts: list[str] = []
    if any(v is None for v in values):
        alts.append(_eq_sql(x, None, params))
    for flag in (False, True):
        if any(v is flag for v in values):
            alts.append(_eq_sql(x, flag, params))
    strings = list(dict.fromkeys(v for v in values if isinstance(v, str)))
    numbers = list(
        dict.fromkeys(
            Decimal(repr(v)) if isinstance(v, float) else Decimal(v)
            for v in values
            if isinstance(v, int | float) and not isinstance(v, bool)
        )
    )
    if strings:
        params.append(strings)
        alts.append(
            f"COALESCE(jsonb_typeof({x}) = 'string'"
            f" AND ({x} #>> '{{}}') COLLATE \"C\" = ANY(%s::text[]), {FALSE})"
        )
    if numbers:
        params.append(numbers)
        alts.append(
            f"(CASE WHEN jsonb_typeof({x}) = 'number'"
            f" THEN ({x})::numeric = ANY(%s::numeric[]) ELSE {FALSE} END)"
        )
    return "(" + " OR ".join(alts) + ")"


def _range_sql(x: str, ranges: list[tuple[str, Any]], params: list[Any]) -> str:
    """The comparison operators of one field, all of one kind; never SQL NULL."""
    if isinstance(ranges[0][1], str):
        terms = []
        for op, value in ranges:
            params.append(value)
            terms.append(f"({x} #>> '{{}}') COLLATE \"C\" {COMPARE_OPS[op]} %s::text")
        return f"COALESCE(jsonb_typeof({x}) = 'string' AND " + " AND ".join(terms) + f", {FALSE})"
    terms = []
    for op, value in ranges:
        params.append(_number(value))
        terms.append(f"{x} {COMPARE_OPS[op]} to_jsonb(%s::numeric)")
    # Flat conjuncts (never NULL: a missing field fails ``IS NOT NULL`` first), so an
    # expression index on ``x`` serves the bounds; the type guard keeps numbers only.
    return f"({x} IS NOT NULL AND jsonb_typeof({x}) = 'number' AND " + " AND ".join(terms) + ")"


def _field_sql(field: str, cond: object, column: str, params: list[Any], argument: str) -> str:
    x = field_expr_pg(field_path(field, argument), column)
    if not isinstance(cond, Mapping):
        return _eq_sql(x, _scalar(cond, argument), params)
    if not cond:
        raise InvalidInput(f"{argument}: empty operator object for field {field[:80]!r}")
    clauses = []
    numbers: list[tuple[str, Any]] = []
    strings: list[tuple[str, Any]] = []
    for op, value in cond.items():
        if op not in FIELD_OPS:
            raise InvalidInput(f"{argument}: unknown operator {str(op)[:40]!r}")
        if op in ("$eq", "$ne"):
            eq = _eq_sql(x, _scalar(value, argument), params)
            clauses.append(eq if op == "$eq" else f"(NOT {eq})")
        elif op in ("$in", "$nin"):
            if not isinstance(value, list | tuple):
                raise InvalidInput(f"{argument}: {op} takes a list")
            found = _in_sql(x, [_scalar(v, argument) for v in value], params)
            clauses.append(found if op == "$in" else f"(NOT {found})")
        else:
            scalar = _scalar(value, argument)
            if scalar is None or isinstance(scalar, bool):
                raise InvalidInput(f"{argument}: {op} takes a number or a string")
            (strings if isinstance(scalar, str) else numbers).append((op, scalar))
    if numbers and strings:
        clauses.append(FALSE)  # no value is both a number and a string
    elif numbers or strings:
        clauses.append(_range_sql(x, numbers or strings, params))
    return _join(clauses, " AND ")


def _join(clauses: list[str], joiner: str) -> str:
    """A flat list: PostgreSQL's parser keeps ``a OR b OR c`` as one n-ary node."""
    return clauses[0] if len(clauses) == 1 else "(" + joiner.join(clauses) + ")"


def _where_sql(where: object, column: str, params: list[Any], argument: str, depth: int) -> str:
    if depth > MAX_FILTER_DEPTH:
        raise InvalidInput(f"{argument}: filter nested too deeply")
    if not isinstance(where, Mapping):
        raise InvalidInput(f"{argument}: a filter must be an object")
    clauses = []
    for key, cond in where.items():
        if key in ("$and", "$or"):
            if not isinstance(cond, list | tuple) or not cond:
                raise InvalidInput(f"{argument}: {key} takes a non-empty list of filters")
            joiner = " AND " if key == "$and" else " OR "
            if len(cond) < LARGE_LIST:
                subs = [_where_sql(c, column, params, argument, depth + 1) for c in cond]
            else:
                groups, others = _list_groups(key, cond)
                subs = []
                for f, vs in groups.items():
                    x = field_expr_pg(field_path(f, argument), column)
                    found = _in_sql(x, [_scalar(v, argument) for v in vs], params)
                    subs.append(f"(NOT {found})" if key == "$and" else found)
                subs += [_where_sql(c, column, params, argument, depth + 1) for c in others]
            clauses.append(_join(subs, joiner))
        elif isinstance(key, str) and key.startswith("$"):
            raise InvalidInput(f"{argument}: unknown operator {key[:40]!r}")
        else:
            clauses.append(_field_sql(key, cond, column, params, argument))
    return _join(clauses, " AND ") if clauses else TRUE


def compile_where_pg(
    where: Mapping[str, Any] | None, column: str = "doc", argument: str = "where"
) -> tuple[str, list[Any]]:
    """A filter as a PostgreSQL boolean expression over the ``jsonb`` column ``column`` and
    its parameters (``%s`` placeholders, in order); never SQL NULL."""
    column_name(column)
    params: list[Any] = []
    if where is None:
        return TRUE, params
    sql = _where_sql(where, column, params, argument, 0)
    if len(params) > MAX_PARAMS:
        raise InvalidInput(
            f"{argument}: the filter needs {len(params):,} values bound (at most {MAX_PARAMS:,});"
            " express long lists of equalities as $in"
        )
    return sql, params


def _order_terms(x: str, direction: str) -> list[str]:
    """SQLite's order of ``json_extract`` values: missing/null, then numbers and booleans
    (as 1/0) by value, then strings (bytewise) and objects/arrays (by their JSON text)."""
    kind = f"jsonb_typeof({x})"
    return [
        f"(CASE {kind} WHEN 'number' THEN 1 WHEN 'boolean' THEN 1"
        f" WHEN 'string' THEN 2 WHEN 'object' THEN 2 WHEN 'array' THEN 2 ELSE 0 END) {direction}",
        f"(CASE {kind} WHEN 'number' THEN ({x})::numeric"
        f" WHEN 'boolean' THEN (CASE WHEN ({x})::boolean THEN 1 ELSE 0 END) END) {direction}",
        f"(CASE {kind} WHEN 'string' THEN ({x} #>> '{{}}')"
        f" WHEN 'object' THEN ({x})::text WHEN 'array' THEN ({x})::text END)"
        f' COLLATE "C" {direction}',
    ]


def _numeric_range(cond: object) -> bool:
    """Whether a field's condition is a range on numbers only (no string bound)."""
    if not isinstance(cond, Mapping):
        return False
    bounds = [v for op, v in cond.items() if op in COMPARE_OPS]
    return bool(bounds) and all(
        isinstance(v, int | float) and not isinstance(v, bool) for v in bounds
    )


def numeric_fields(where: Mapping[str, Any] | None) -> frozenset[str]:
    """Fields every record matching ``where`` holds a number in: those with a numeric range
    in the filter's top-level conjunction (itself or a top-level ``$and``). Ordering by such
    a field needs no type ranks (``compile_order_pg(numbers=...)``), so an index on it can
    give the order. ``where`` is assumed valid (``compile_where_pg`` checked it)."""
    found: set[str] = set()
    if not isinstance(where, Mapping):
        return frozenset()
    for key, cond in where.items():
        if key == "$and" and isinstance(cond, list | tuple):
            for sub in cond:
                found |= numeric_fields(sub)
        elif isinstance(key, str) and not key.startswith("$") and _numeric_range(cond):
            found.add(key)
    return frozenset(found)


def compile_order_pg(
    order_by: str | Sequence[str] | None,
    column: str = "doc",
    seq: str = "seq",
    argument: str = "order_by",
    numbers: frozenset[str] = frozenset(),
) -> str:
    """``order_by`` as a PostgreSQL ORDER BY list; ties in commit order (column ``seq``) in the
    direction of the last key, so ``"-f"`` gives exactly the reverse of ``"f"``. A key in
    ``numbers`` (``numeric_fields`` of the query's filter: every matching record holds a
    number there) is ordered by its plain ``jsonb`` expression, which an index can serve."""
    column_name(column)
    tie = column_name(seq, "seq")
    if order_by is None:
        return f"{tie} ASC"
    if not isinstance(order_by, str | list | tuple):
        raise InvalidInput(f"{argument}: expected a field name or a list of field names")
    keys = [order_by] if isinstance(order_by, str) else list(order_by)
    if not all(isinstance(k, str) for k in keys):
        raise InvalidInput(f"{argument}: expected a field name or a list of field names")
    if not keys:
        raise InvalidInput(f"{argument}: expected at least one field name")
    terms: list[str] = []
    direction = "ASC"
    for key in keys:
        direction = "DESC" if key.startswith("-") else "ASC"
        name = key[1:] if direction == "DESC" else key
        x = field_expr_pg(field_path(name, argument), column)
        terms += [f"{x} {direction}"] if name in numbers else _order_terms(x, direction)
    return ", ".join([*terms, f"{tie} {direction}"])
