"""``ctxstore.service``: the HTTP service, ``app.service`` (needs the ``service`` extra)."""

from app.service import create_app

__all__ = ["create_app"]
