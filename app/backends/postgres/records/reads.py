"""``IndexReads``: ``PgRecords``' reads of the current-version table (the query index):
single statements, or one REPEATABLE READ snapshot on a server-side cursor for ``stream``."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, NamedTuple

import orjson

from app.backends.postgres.filters import compile_order_pg, compile_where_pg
from app.backends.postgres.records.base import BASE, PgBase
from app.core.errors import IntegrityError
from app.core.filters import Predicate, predicate


class PgPlan(NamedTuple):
    """A filter and an order compiled to PostgreSQL (``CompiledQuery``)."""

    where_sql: str
    params: tuple[Any, ...]
    order_sql: str
    check: Predicate | None


def _tie_order(order_sql: str) -> str:
    """Ties in commit order: ``seq`` then ``pos``, in the direction of the last key."""
    return order_sql + (', "pos" DESC' if order_sql.endswith("DESC") else ', "pos" ASC')


class IndexReads(PgBase):
    """Reads of the index (``get``, ``existing``, ``compile``, ``query``, ``stream``,
    ``count``, ``select_ids``, ``damaged``)."""

    # -- reading the index ---------------------------------------------------------------

    def get(self, collection: str, record_id: str) -> str | None:
        self.ready()
        with self.transaction("reading a record") as conn:
            row = conn.execute(
                f"SELECT raw {BASE} AND id = %s", (self.name, collection, record_id)
            ).fetchone()
        return None if row is None else bytes(row[0]).decode()

    def existing(self, collection: str, ids: Sequence[str]) -> list[str]:
        if not ids:
            return []
        self.ready()
        with self.transaction("reading records") as conn:
            found = {
                r[0]
                for r in conn.execute(
                    f"SELECT id {BASE} AND id = ANY(%s)", (self.name, collection, list(ids))
                )
            }
        return [i for i in ids if i in found]

    def compile(self, where: Any, order_by: Any) -> PgPlan:
        where_sql, params = compile_where_pg(where)
        return PgPlan(
            where_sql,
            tuple(params),
            _tie_order(compile_order_pg(order_by)),
            predicate(where) if where else None,
        )

    def _select(self, collection: str, plan: PgPlan) -> tuple[str, list[Any]]:
        sql = f"SELECT raw {BASE} AND {plan.where_sql} ORDER BY {plan.order_sql}"
        return sql, [self.name, collection, *plan.params]

    def query(
        self, collection: str, plan: PgPlan, limit: int | None, offset: int
    ) -> list[dict[str, Any]]:
        self.ready()
        sql, args = self._select(collection, plan)
        sql += " LIMIT %s OFFSET %s"
        with self.transaction("querying records") as conn:
            rows = conn.execute(sql, [*args, limit, offset]).fetchall()
        loads = orjson.loads
        return [loads(r[0]) for r in rows]

    def stream(self, collection: str, plan: PgPlan) -> Iterator[dict[str, Any]]:
        self.ready()
        sql, args = self._select(collection, plan)
        loads = orjson.loads
        return (loads(r[0]) for r in self.snapshot(sql, args))

    def count(self, collection: str, plan: PgPlan) -> int:
        self.ready()
        with self.transaction("counting records") as conn:
            row = conn.execute(
                f"SELECT count(*) {BASE} AND {plan.where_sql}",
                [self.name, collection, *plan.params],
            ).fetchone()
        return int(row[0]) if row is not None else 0

    def select_ids(self, collection: str, plan: PgPlan) -> list[str]:
        self.ready()
        with self.transaction("selecting records") as conn:
            rows = conn.execute(
                f"SELECT id {BASE} AND {plan.where_sql} ORDER BY seq, pos",
                [self.name, collection, *plan.params],
            ).fetchall()
        return [str(r[0]) for r in rows]

    def damaged(self, collection: str) -> IntegrityError:
        return IntegrityError(
            f"{self.where()}: the index of {collection!r} is damaged (a row does not match "
            "its lookup); repair it with rebuild_index()"
        )


__all__ = ["IndexReads", "PgPlan"]
