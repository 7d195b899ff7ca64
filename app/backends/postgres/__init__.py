"""PostgreSQL backend parts.

Nothing here imports ``psycopg`` at module level: a plain ``import ctxstore`` must work without
the ``postgres`` extra installed.
"""
