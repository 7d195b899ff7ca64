"""``AuditLog`` (``store.audit``): the append-only, chained audit log of the HTTP service
(docs/api.md, "Service security").

Each entry is ``(seq, at, token, action, target, outcome, request_id)`` plus
``mac = trustkey.sign("audit", previous mac + canonical entry)`` (the canonical entry is its
fields but the mac as JSON with sorted keys; the first entry's previous mac is empty). The
backend appends in one transaction that reads the newest entry, so concurrent appenders
(threads, servers, CLI processes) keep one dense, linear chain.

``verify`` walks the chain: an edited, inserted, reordered or removed entry, or one signed with
another key, breaks it. Known limit: removing the *newest* entries leaves a shorter chain that
is valid; only a head remembered elsewhere (``head()``: its ``seq`` and ``mac``) passed to
``verify(head=...)`` catches that.
"""

from __future__ import annotations

import itertools

import icontract
import orjson

from app.backends.protocols import Access
from app.core import clock
from app.core.access_types import AuditEntry, AuditEvent, AuditPage
from app.core.contracts import ensure, require
from app.core.rules import Limit, Offset, checked
from app.core.trustkey import same, sign, trust_key
from app.formats.accessdb import AuditRow

MAX_FIELD_CHARS = 1024
"""Longer token names, actions, targets and request ids are shortened to this (marked)."""
MAX_PAGE = 10_000
"""The most entries one ``page`` returns."""
VERIFY_CHUNK = 5_000
MAX_PROBLEMS = 100
"""``verify`` lists at most this many problems, then how many more it found."""


def canonical(row: AuditRow | AuditEntry) -> bytes:
    """The signed bytes of an entry: every field but the mac, JSON with sorted keys."""
    return orjson.dumps(
        {
            "seq": row.seq,
            "at": row.at,
            "token": row.token,
            "action": row.action,
            "target": row.target,
            "outcome": row.outcome,
            "request_id": row.request_id,
        },
        option=orjson.OPT_SORT_KEYS,
    )


def chain_mac(previous: str, row: AuditRow | AuditEntry, key: bytes) -> str:
    """The mac an entry must carry after the entry whose mac is ``previous`` ("" first)."""
    return sign("audit", previous.encode() + canonical(row), key=key)


def entry(row: AuditRow) -> AuditEntry:
    return AuditEntry(**row._asdict())


def _short(text: str) -> str:
    if len(text) <= MAX_FIELD_CHARS:
        return text
    more = f"...({len(text)} chars)"
    return text[: MAX_FIELD_CHARS - len(more)] + more


class AuditLog(icontract.DBC):
    """The store's audit log: ``record``, ``page``, ``head``, ``verify``."""

    def __init__(self, access: Access) -> None:
        self.access = access

    def __repr__(self) -> str:
        return f"AuditLog({self.access.where()!r})"

    @require(lambda event: isinstance(event, AuditEvent), "event", "must be an AuditEvent")
    @ensure(lambda result: result.seq >= 1, "entries are numbered from 1")
    @ensure(lambda event, result: result.outcome == event.outcome, "the event is what is kept")
    def record(self, event: AuditEvent) -> AuditEntry:
        """Append ``event`` with the next ``seq``, the current UTC time and its chained mac,
        atomically (concurrent appenders in other threads or processes keep one dense chain).
        Text fields longer than 1024 characters are shortened (marked ``...(N chars)``)."""
        key = trust_key()  # read before the transaction: a missing key changes nothing

        def make(last: AuditRow | None) -> AuditRow:
            unsigned = AuditRow(
                seq=1 if last is None else max(last.seq, 0) + 1,
                at=clock.utc_iso(),
                token=_short(event.token),
                action=_short(event.action),
                target=_short(event.target),
                outcome=event.outcome,
                request_id=_short(event.request_id),
                mac="",
            )
            return unsigned._replace(mac=chain_mac("" if last is None else last.mac, unsigned, key))

        return entry(self.access.append_audit(make))

    @checked
    @require(
        lambda limit: not isinstance(limit, int) or limit <= MAX_PAGE,  # non-int: Limit refuses
        "limit",
        f"must be at most {MAX_PAGE}",
    )
    @ensure(lambda limit, result: len(result.entries) <= limit, "at most limit entries")
    @ensure(
        lambda result: all(a.seq < b.seq for a, b in itertools.pairwise(result.entries)),
        "oldest first",
    )
    def page(self, *, offset: Offset = 0, limit: Limit = 100) -> AuditPage:
        """Entries oldest first, from the ``offset``-th (0-based), at most ``limit`` (at most
        10000), with the total number of entries."""
        rows = self.access.audit_rows(offset, limit)
        total = max(self.access.audit_count(), offset + len(rows))
        return AuditPage(entries=[entry(r) for r in rows], total=total, offset=offset)

    @ensure(
        lambda self, result: (result is None) == (self.access.audit_count() == 0),
        "None only for an empty log",
    )
    def head(self) -> AuditEntry | None:
        """The newest entry (None for an empty log): remember its ``seq`` and ``mac``
        outside the store and pass it to ``verify(head=...)`` to catch removed newest
        entries."""
        last = self.access.audit_last()
        return None if last is None else entry(last)

    @require(
        lambda head: head is None or isinstance(head, AuditEntry),
        "head",
        "must be None or an AuditEntry (from head())",
    )
    @ensure(lambda result: len(result) <= MAX_PROBLEMS + 1, "a bounded list of problems")
    def verify(self, *, head: AuditEntry | None = None) -> list[str]:
        """Problems of the chain (empty: intact): entries edited, inserted, reordered,
        removed in the middle or signed with another key. The newest entries removed are
        only caught against ``head`` (an entry ``head()`` returned earlier; its ``seq`` and
        ``mac`` are compared): the log must still hold it, unchanged. Needs the trust key
        once the log has entries."""
        where = self.access.where()
        problems: list[str] = []
        found = 0
        key: bytes | None = None
        previous = ""
        expected = 1
        seen_head = head is None
        after = -(2**63)  # every stored row, a planted seq <= 0 too

        def problem(text: str) -> None:
            nonlocal found
            found += 1
            if len(problems) < MAX_PROBLEMS:
                problems.append(f"{where}: audit {text}")

        while True:
            rows = self.access.audit_after(after, VERIFY_CHUNK)
            if not rows:
                break
            after = rows[-1].seq
            if key is None:
                key = trust_key()
            for row in rows:
                if row.seq > expected:
                    problem(f"entries {expected}..{row.seq - 1} are missing (removed)")
                if not same(chain_mac(previous, row, key), row.mac):
                    problem(
                        f"entry {row.seq} breaks the chain (edited, inserted, reordered, "
                        "after a removed entry, or signed with another key)"
                    )
                if head is not None and row.seq == head.seq:
                    seen_head = True
                    if not same(row.mac, head.mac):  # the mac signs every field
                        problem(f"entry {row.seq} differs from the remembered head")
                previous, expected = row.mac, row.seq + 1
        if not seen_head and head is not None:
            problem(
                f"log ends at entry {expected - 1}, before the remembered head {head.seq} "
                "(the newest entries were removed)"
            )
        if found > len(problems):
            problems.append(f"{where}: audit ... and {found - len(problems)} more problems")
        return problems


__all__ = ["MAX_FIELD_CHARS", "MAX_PAGE", "AuditLog", "canonical", "chain_mac"]
