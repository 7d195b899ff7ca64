"""A handler module for ``ctxstore worker --import wf_handlers`` (tests of custom workflow
types in other processes): its ``register(workflows)`` registers

- ``rank_check``: writes, for its workflow (``params["me"]``), how many pending workflows
  outrank it (higher priority, or the same and older) at the time it runs: with claims by
  priority then age that is always 0, since nothing returns to pending;
- ``flaky``: appends its chunk to ``params["collection"]``, then raises while the chunk's
  attempt (counted per process) is at most ``params["fail_first"]``;
- ``tag``: appends its items with ``tagged: params["tag"]`` into ``tagged``.

It also makes retries quick (``retry_policy`` base 0.05 s).
"""

from __future__ import annotations

from typing import Any

from app.managers.workflows.retry import RetryPolicy

ATTEMPTS: dict[tuple[str, str], int] = {}


def register(workflows: Any) -> None:
    workflows.retry_policy = RetryPolicy(base_s=0.05, cap_s=0.5)

    def rank(wf: Any) -> tuple[int, float, str]:
        return (-wf.priority, wf.created_at.timestamp(), wf.workflow_id)

    def rank_check(ctx: Any, chunk: list[dict[str, Any]], params: dict[str, Any]) -> None:
        me = workflows.get(params["me"])
        pending = workflows.list(status="pending", limit=10_000)
        ahead = [w.workflow_id for w in pending if rank(w) < rank(me)]
        ctx.append("seen", [{"id": me.workflow_id, "priority": me.priority, "ahead": ahead}])

    def flaky(ctx: Any, chunk: list[dict[str, Any]], params: dict[str, Any]) -> None:
        key = (params["me"], str(chunk[0]["id"]))
        ATTEMPTS[key] = ATTEMPTS.get(key, 0) + 1
        ctx.append(params["collection"], chunk)
        if ATTEMPTS[key] <= params["fail_first"]:
            raise RuntimeError(f"flaky attempt {ATTEMPTS[key]}")

    def tag(ctx: Any, chunk: list[dict[str, Any]], params: dict[str, Any]) -> None:
        ctx.append("tagged", [{**item, "tagged": params["tag"]} for item in chunk])

    workflows.register("rank_check", rank_check)
    workflows.register("flaky", flaky)
    workflows.register("tag", tag)
