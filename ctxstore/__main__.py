"""``python -m ctxstore`` runs the ctxstore command line."""

from app.surfaces.cli import main

main()
