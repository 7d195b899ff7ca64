"""The HTTP service (FastAPI): one router per area, assembled by ``create_app``.

Modules: ``app`` (``create_app``), ``deps`` (the store as a dependency), ``models`` (request
and response bodies), ``handlers`` (errors -> responses, from ``app.surfaces.errors``), and the
routers ``health``, ``contexts``, ``records``, ``embeddings``, ``transfer``, ``workflows``.
"""

from app.surfaces.http.app import create_app

__all__ = ["create_app"]
