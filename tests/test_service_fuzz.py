"""Schemathesis over the service's own OpenAPI document: with an admin token no request it
generates gets a 5xx; without a token every non-public operation answers exactly 401 (never
400, 403, 404: nothing about the store is told before the token).

Bounded (a few examples per operation) so it stays a quick CI check; the store it hits holds
a context with records, an embedding set and a workflow so that generated requests reach
real code paths, not only 404s.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import schemathesis
from hypothesis import HealthCheck, settings

import app
from app.surfaces.http.scopes import is_public

_TMP = tempfile.TemporaryDirectory(prefix="ctxstore-fuzz-")
_STORE = app.open_store(Path(_TMP.name) / "store")
_CTX = _STORE.context("default")
_CTX.append(
    "analogies", [{"id": "a1", "source_domain": "x", "target_domain": "y", "quality_score": 0.5}]
)
_CTX.append("string", [{"id": "string", "value": 1}])
_CTX.embeddings.save("string", ["string", "b"], np.eye(2, dtype=np.float32))
_STORE.workflows.submit(
    "append",
    context="default",
    items=[{"id": "w"}],
    params={"collection": "string"},
    workflow_id="string",
)
_ADMIN = {"Authorization": "Bearer " + _STORE.tokens.create("fuzz-admin-q7x", scope="admin")}

from app.service import create_app  # noqa: E402

# schemathesis calls the app in-process as http://testserver
schema = schemathesis.openapi.from_asgi(
    "/openapi.json", create_app(_STORE, allowed_hosts=["testserver"])
)
_SETTINGS = settings(
    max_examples=8,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)


@schema.parametrize()
@_SETTINGS
def test_no_server_errors(case: schemathesis.Case) -> None:
    response = case.call(headers=_ADMIN)
    assert response.status_code < 500, (case.method, case.path, response.text[:500])


@schema.parametrize()
@_SETTINGS
def test_without_a_token_only_401(case: schemathesis.Case) -> None:
    response = case.call()
    if is_public(case.method.upper(), case.path):
        assert response.status_code < 500, (case.method, case.path, response.text[:500])
    else:
        assert response.status_code == 401, (case.method, case.path, response.text[:500])
        assert response.headers["www-authenticate"][0].startswith("Bearer")
