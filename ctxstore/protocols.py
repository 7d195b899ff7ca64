"""``ctxstore.protocols``: the manager Protocols, ``app.protocols``."""

from app.protocols import *  # noqa: F403
from app.protocols import __all__ as __all__
