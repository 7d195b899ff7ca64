"""``TokenManager`` (``store.tokens``): bearer tokens of the HTTP service (docs/api.md,
"Service security").

A token is ``ctx_<id>_<secret>``: ``id`` 8 random bytes in hex (public, the lookup key),
``secret`` 32 random bytes urlsafe-base64. It is shown once, by ``create``. The store keeps per
id the name, scope, contexts, creation time and ``trustkey.sign("token", ...)`` over the
secret *and* those fields: a row written or edited in the store without the key (a minted
token, a scope raised from read to admin) never authenticates. ``authenticate`` is one indexed
read by id and one constant-time comparison.
"""

from __future__ import annotations

import builtins
import re
import secrets
from collections.abc import Sequence

import icontract
import orjson

from app.backends.protocols import Access
from app.core import clock
from app.core.access_types import Scope, TokenInfo
from app.core.contracts import ensure, ensure_full
from app.core.errors import NotFoundError
from app.core.rules import ContextList, TokenName, TokenScope, checked
from app.core.trustkey import same, sign
from app.formats.accessdb import TokenRow

PREFIX = "ctx"
ID_BYTES = 8
SECRET_BYTES = 32
MAX_TOKEN_CHARS = 200
TOKEN_PATTERN = re.compile(r"ctx_([0-9a-f]{16})_([A-Za-z0-9_-]{22,128})")
"""What ``create`` hands out; anything else is refused by ``authenticate`` without a read."""


def token_mac(
    token_id: str,
    secret: str,
    name: str,
    scope: str,
    contexts: Sequence[str] | None,
    created_at: str,
) -> str:
    """The keyed hash stored for a token: binds the secret to the row's fields."""
    data = orjson.dumps(
        {
            "id": token_id,
            "secret": secret,
            "name": name,
            "scope": scope,
            "contexts": None if contexts is None else list(contexts),
            "created_at": created_at,
        },
        option=orjson.OPT_SORT_KEYS,
    )
    return sign("token", data)


def parse(token: object) -> tuple[str, str] | None:
    """``(id, secret)`` of a well-formed token, else None (never raises)."""
    if not isinstance(token, str) or len(token) > MAX_TOKEN_CHARS:
        return None
    found = TOKEN_PATTERN.fullmatch(token)
    if found is None:
        return None
    return found.group(1), found.group(2)


def info(row: TokenRow) -> TokenInfo:
    scope: Scope = "admin" if row.scope == "admin" else "write" if row.scope == "write" else "read"
    return TokenInfo(name=row.name, scope=scope, contexts=row.contexts, created_at=row.created_at)


class TokenManager(icontract.DBC):
    """The store's service tokens: ``create``, ``list``, ``revoke``, ``authenticate``."""

    def __init__(self, access: Access) -> None:
        self.access = access

    def __repr__(self) -> str:
        return f"TokenManager({self.access.where()!r})"

    @checked
    @ensure(lambda result: parse(result) is not None, "the token has the documented form")
    @ensure_full(
        lambda self, name, result: (
            (found := self.authenticate(result)) is not None and found.name == name
        ),
        "the new token authenticates as its name",
    )
    def create(
        self,
        name: TokenName,
        *,
        scope: TokenScope,
        contexts: ContextList | None = None,
    ) -> str:
        """Create a token named ``name`` with ``scope`` (``read``, ``write`` or ``admin``),
        limited to ``contexts`` when given; returns the token, which is never shown again.
        ``ConflictError`` if the name is taken (revoke it first)."""
        token_id = secrets.token_hex(ID_BYTES)
        secret = secrets.token_urlsafe(SECRET_BYTES)
        kept = None if contexts is None else tuple(sorted(set(contexts)))
        created_at = clock.utc_iso()
        mac = token_mac(token_id, secret, name, scope, kept, created_at)
        self.access.add_token(TokenRow(token_id, name, scope, kept, created_at, mac))
        return f"{PREFIX}_{token_id}_{secret}"

    @ensure(
        lambda result: [t.name for t in result] == sorted({t.name for t in result}),
        "sorted by name, each name once",
    )
    def list(self) -> builtins.list[TokenInfo]:
        """Every token (name, scope, contexts, creation time), sorted by name; never a token
        or its hash. A store where no token was ever created lists none."""
        return [info(row) for row in self.access.tokens()]

    @checked
    @ensure_full(lambda self, name: name not in {t.name for t in self.list()}, "the token is gone")
    def revoke(self, name: TokenName) -> None:
        """Delete the token named ``name`` (it stops authenticating at once);
        ``NotFoundError`` if there is none."""
        if not self.access.remove_token(name):
            raise NotFoundError(f"token {name!r} not found")

    @ensure(
        lambda token, result: result is None or parse(token) is not None,
        "only a well-formed token authenticates",
    )
    def authenticate(self, token: str) -> TokenInfo | None:
        """The ``TokenInfo`` of a valid token; None for anything malformed, unknown, revoked
        or not signed with this trust key (never raises for bad input). One indexed read and
        one constant-time comparison."""
        parsed = parse(token)
        if parsed is None:
            return None
        token_id, secret = parsed
        row = self.access.token(token_id)
        if row is None:
            return None
        expected = token_mac(token_id, secret, row.name, row.scope, row.contexts, row.created_at)
        if not same(expected, row.mac) or row.scope not in ("read", "write", "admin"):
            return None
        return info(row)


__all__ = ["MAX_TOKEN_CHARS", "TOKEN_PATTERN", "TokenManager", "parse", "token_mac"]
