"""``import ctxstore``: the public name of the package ``app``, giving the same objects
(``ctxstore.open_store is app.open_store``). ``ctxstore.service`` and ``ctxstore.protocols``
are ``app.service`` and ``app.protocols``; ``python -m ctxstore`` runs the command line."""

from app import *  # noqa: F403
from app import __all__ as __all__
