"""``GET /health``: the service is up, with its version and the store's format."""

from __future__ import annotations

from fastapi import APIRouter

from app.core.version import __version__
from app.managers.store import FORMAT_VERSION
from app.surfaces.http.deps import StoreDep
from app.surfaces.http.models import Health

router = APIRouter(tags=["store"])


@router.get("/health", response_model=Health)
def health(store: StoreDep) -> Health:
    return Health(
        version=__version__, format_version=FORMAT_VERSION, contexts=len(store.contexts())
    )
