"""The surfaces over the public API: ``cli`` (the ``ctxstore`` command line), ``http`` (the
FastAPI service), and ``errors``, the one table both use to answer an error."""
