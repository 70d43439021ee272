"""The admin, one screen per module; importing them registers them."""

from embeddings.admin import clips, runs  # noqa: F401
