"""The admin, one screen per module; importing them registers them."""

from embeddings.admin import batches, clips, runs  # noqa: F401
