"""Packing texts into as few requests as the API's per-request limits allow."""

from collections.abc import Iterator, Sequence

from embeddings.providers.tokens import estimate_tokens


def pack_requests(
    texts: Sequence[str], *, max_inputs: int, max_tokens: int
) -> Iterator[tuple[list[str], int]]:
    """Yield (texts, estimated tokens) groups within both limits, in the given order."""
    group: list[str] = []
    group_tokens = 0
    for text in texts:
        tokens = estimate_tokens(text)
        if group and (len(group) >= max_inputs or group_tokens + tokens > max_tokens):
            yield group, group_tokens
            group, group_tokens = [], 0
        group.append(text)
        group_tokens += tokens
    if group:
        yield group, group_tokens
