"""The HTTP service: ``create_app(store) -> fastapi.FastAPI`` (needs the ``service`` extra).

``import app`` never imports FastAPI; importing this module does.
"""

from app.surfaces.http import create_app

__all__ = ["create_app"]
