"""``python -m hanrag`` runs the command line."""

from hanrag.cli.main import app

app()
