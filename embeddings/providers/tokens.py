"""Token estimates that need no tokenizer download.

The API sizes a request by about UTF-8 bytes / 4 (OpenAI's rule of thumb: a token is about 4
characters of English, https://platform.openai.com/tokenizer), so requests are packed by
that estimate; the exact count comes back in `usage.prompt_tokens` and is what stats report.
"""

BYTES_PER_TOKEN = 4


def estimate_tokens(text: str) -> int:
    return max(1, -(-len(text.encode("utf-8")) // BYTES_PER_TOKEN))


def truncate_to_tokens(text: str, max_tokens: int) -> str:
    """Cut `text` so its estimate fits `max_tokens`, never splitting a UTF-8 character."""
    encoded = text.encode("utf-8")
    limit = max_tokens * BYTES_PER_TOKEN
    if len(encoded) <= limit:
        return text
    return encoded[:limit].decode("utf-8", errors="ignore")
