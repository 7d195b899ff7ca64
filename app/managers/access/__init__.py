"""Service access of a store (docs/api.md, "Service security"): ``store.tokens``
(``TokenManager``: bearer tokens, stored only as hashes keyed by the trust key) and
``store.audit`` (``AuditLog``: an append-only log chained with the trust key).

Both keep their rows behind the backend seam (``app.backends.protocols.Access``); the key
(``app.core.trustkey``) stays in this layer and never reaches a backend.
"""

from app.managers.access.audit import AuditLog
from app.managers.access.tokens import TokenManager

__all__ = ["AuditLog", "TokenManager"]
