"""The rules a search's parameters follow, each stated once: the search functions and the
`search_clips` command call these, so a limit and its message cannot drift apart."""

from collections.abc import Sized

from embeddings.app_settings import MAX_EF_SEARCH
from embeddings.exceptions import InvalidSearch

MAX_K = 1000


def check_k(k: int, name: str = "k") -> None:
    """`name` is what the caller calls it (the command's option is `-k`)."""
    if not 1 <= k <= MAX_K:
        raise InvalidSearch(f"{name} must be between 1 and {MAX_K}, not {k}")


def check_ef_search(ef_search: int | None) -> None:
    """None: the served version's EMBEDDING_SEARCH_EF, which the settings' checks bound."""
    if ef_search is not None and not 1 <= ef_search <= MAX_EF_SEARCH:
        raise InvalidSearch(
            f"ef_search (EMBEDDING_SEARCH_EF) must be between 1 and {MAX_EF_SEARCH}, "
            f"not {ef_search}"
        )


def check_query_text(text: str) -> None:
    if not text or not text.strip():
        raise InvalidSearch("the query text is empty: say what to look for")


def check_vector(vector: Sized, dimensions: int) -> None:
    if len(vector) != dimensions:
        raise InvalidSearch(
            f"the query vector has {len(vector)} dimensions, the clips {dimensions}"
        )
