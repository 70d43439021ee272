"""The text embedded for a clip, defined once as a SQL expression.

Format (docs/reference.md): `Title: {title}. Broadcaster: {broadcaster_name}. Clipped by:
{creator_name}. Game: {game_name}`, blank parts left out, `Clipped by` left out when it
equals the broadcaster. Built from immutable SQL so the database can store a hash of it in a
generated column: staleness and "edited while in flight" checks then run inside PostgreSQL.
"""

import hashlib

from django.db.models import Case, CharField, Expression, F, Value, When
from django.db.models.functions import MD5, Concat, Length, Substr, Trim
from django.db.models.lookups import Exact, GreaterThan

SEPARATOR = ". "


def _part(label: str, field: str, *, unless_equal_to: str | None = None) -> Case:
    """`. {label}: {value}` when the trimmed value is not blank, else NULL (dropped by Concat)."""
    value = Trim(F(field))
    condition = GreaterThan(Length(value), 0)
    if unless_equal_to is not None:
        condition = condition & ~Exact(value, Trim(F(unless_equal_to)))
    return Case(
        When(condition, then=Concat(Value(SEPARATOR + label + ": "), value)),
        default=None,
        output_field=CharField(),
    )


def clip_text_expression() -> Expression:
    """SQL for the embedded text of a clip (annotate with it, or hash it)."""
    parts = Concat(
        _part("Title", "title"),
        _part("Broadcaster", "broadcaster_name"),
        _part("Clipped by", "creator_name", unless_equal_to="broadcaster_name"),
        _part("Game", "game_name"),
        output_field=CharField(),
    )
    return Substr(parts, len(SEPARATOR) + 1, output_field=CharField())


def clip_text_hash_expression() -> Expression:
    """SQL hash of the embedded text; equals `text_hash()` of the same text."""
    return MD5(clip_text_expression())


def text_hash(text: str) -> str:
    """Hash a text the way PostgreSQL's md5() does, for cache keys and provenance."""
    return hashlib.md5(text.encode("utf-8"), usedforsecurity=False).hexdigest()


# A clip whose every text field is blank: nothing to embed (the API refuses an empty input).
BLANK_TEXT_HASH = text_hash("")
