"""Batch workflows of a store (``store.workflows``, docs/api.md "Batch workflows").

- ``manager``: ``WorkflowManager`` (submit / process / list / cancel / rollback / recover /
  purge / metrics / verify);
- ``runner``: the chunk loop and the heartbeat thread;
- ``handlers``: the built-in workflow types and the ``ChunkWriter`` a handler writes through;
- ``rollback``: undoing a workflow's writes from its journal.

The tracker they use is typed by ``app.backends.protocols.WorkflowTracker``; the embedded
implementation is ``app.formats.tracker.TrackerDB``.
"""

from app.managers.workflows.manager import WorkflowManager

__all__ = ["WorkflowManager"]
