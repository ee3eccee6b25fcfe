"""hanrag: a self-hosted, Korean-first retrieval-augmented generation server."""

__version__ = "0.1.0"
