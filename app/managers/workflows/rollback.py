"""Rolling a workflow back from its write journal and the records' history.

For every record a workflow's journal names, the record's history (``Context.history_many``)
is read and split into versions the workflow wrote (its batch ids), versions an earlier,
interrupted rollback of it wrote, and versions others wrote:

- no version of the workflow left: nothing to undo (the call never committed) - unless the
  journal says the call committed and the record existed before: its earlier versions were
  compacted away (``ConflictError``);
- a version by someone else after the workflow's last one: left as it is, listed in errors;
- a version by an earlier rollback after it: already restored, skipped;
- otherwise the version before the workflow's first one is restored (appended again), or, if
  there was none (the workflow created the record) or it was a deletion, the record is
  tombstoned. If there is none but the journal says the record existed before the workflow
  wrote it, its earlier versions were compacted away: ``ConflictError``.

The whole plan is made (under the context's writer lock) before anything is written, so a
``ConflictError`` leaves the records untouched.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from app.backends.protocols import JournalNote
from app.core.errors import ConflictError
from app.core.schemas import RecordVersion
from app.managers.context import Context
from app.managers.workflows.handlers import rollback_prefix

HISTORY_SLICE = 50_000
WRITE_BATCH = 10_000
MAX_LISTED = 50


@dataclass
class _Touched:
    """What the journal says about the records of one collection."""

    ids: dict[str, None] = field(default_factory=dict)  # ordered set
    committed: set[str] = field(default_factory=set)


@dataclass
class RollbackPlan:
    restore: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    tombstone: dict[str, list[str]] = field(default_factory=dict)
    left: list[str] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)

    @property
    def writes(self) -> int:
        return sum(map(len, self.restore.values())) + sum(map(len, self.tombstone.values()))


def _touched(journal: Iterable[JournalNote]) -> tuple[dict[str, _Touched], set[str]]:
    by_collection: dict[str, _Touched] = {}
    batch_ids: set[str] = set()
    for entry in journal:
        t = by_collection.setdefault(entry.collection, _Touched())
        batch_ids.add(entry.batch_id)
        for rid in entry.ids:
            t.ids[rid] = None
        if entry.committed:
            t.committed.update(entry.ids)
    return by_collection, batch_ids


def _slices(ids: list[str]) -> Iterator[list[str]]:
    for i in range(0, len(ids), HISTORY_SLICE):
        yield ids[i : i + HISTORY_SLICE]


def _first_writes(journal: list[JournalNote]) -> dict[tuple[str, str], bool]:
    """(collection, id) -> whether the record existed before the workflow first wrote it."""
    out: dict[tuple[str, str], bool] = {}
    for entry in journal:
        existed = set(entry.existed)
        for rid in entry.ids:
            out.setdefault((entry.collection, rid), rid in existed)
    return out


def plan_rollback(ctx: Context, workflow_id: str, journal: list[JournalNote]) -> RollbackPlan:
    """Decide what to write; ``ConflictError`` if needed versions were compacted away."""
    by_collection, ours = _touched(journal)
    existed_first = _first_writes(journal)
    prefix = rollback_prefix(workflow_id)
    plan = RollbackPlan()
    for collection, touched in by_collection.items():
        restore = plan.restore.setdefault(collection, [])
        tombstone = plan.tombstone.setdefault(collection, [])
        for ids in _slices(list(touched.ids)):
            histories = ctx.history_many(collection, ids)
            for rid in ids:
                _decide(
                    collection,
                    rid,
                    histories.get(rid, []),
                    ours,
                    prefix,
                    existed_first.get((collection, rid), False),
                    rid in touched.committed,
                    plan,
                    restore,
                    tombstone,
                )
    if plan.lost:
        shown = ", ".join(plan.lost[:5])
        raise ConflictError(
            f"workflow {workflow_id!r} cannot be rolled back: the earlier versions of "
            f"{len(plan.lost)} records were compacted away ({shown})"
        )
    return plan


def _decide(
    collection: str,
    rid: str,
    history: list[RecordVersion],
    ours: set[str],
    prefix: str,
    existed_before: bool,
    committed: bool,
    plan: RollbackPlan,
    restore: list[dict[str, Any]],
    tombstone: list[str],
) -> None:
    mine = [i for i, v in enumerate(history) if v.batch_id in ours]
    name = f"{collection}/{rid}"
    if not mine:
        if committed and existed_before:
            plan.lost.append(name)
        return
    first, last = mine[0], mine[-1]
    after = history[last + 1 :]
    if any(not v.batch_id.startswith(prefix) for v in after):
        other = next(v for v in after if not v.batch_id.startswith(prefix))
        plan.left.append(f"{name}: changed by batch {other.batch_id[:60]} since; left as it is")
        return
    if after:  # an earlier, interrupted rollback already restored it
        return
    if first == 0:
        if existed_before:
            plan.lost.append(name)
            return
        previous: RecordVersion | None = None
    else:
        previous = history[first - 1]
    current = history[last]
    if previous is None or previous.deleted:
        if not current.deleted:
            tombstone.append(rid)
    elif previous.data is not None:
        restore.append(previous.data)


def apply_rollback(ctx: Context, workflow_id: str, plan: RollbackPlan) -> None:
    """Write the plan: restored versions and tombstones, in batches with fresh rollback ids."""
    token = os.urandom(4).hex()
    prefix = rollback_prefix(workflow_id) + token
    n = 0
    for collection, records in plan.restore.items():
        for i in range(0, len(records), WRITE_BATCH):
            ctx._append(collection, records[i : i + WRITE_BATCH], batch_id=f"{prefix}:{n}")
            n += 1
    for collection, ids in plan.tombstone.items():
        for i in range(0, len(ids), WRITE_BATCH):
            ids_part = ids[i : i + WRITE_BATCH]
            ctx._delete(collection, ids_part, where=None, batch_id=f"{prefix}:{n}")
            n += 1


def listed(messages: list[str]) -> tuple[list[str], int]:
    """At most ``MAX_LISTED`` messages plus a summary line; and how many were not listed."""
    if len(messages) <= MAX_LISTED:
        return messages, 0
    rest = len(messages) - MAX_LISTED
    return [*messages[:MAX_LISTED], f"... and {rest} more records left as they are"], rest - 1
