"""The bench's ideal script embeds the very text the command embeds: the work is equal."""

import pytest
from django.db import connection

from embeddings.models import Clip
from tests.benchmarks.reference_pipeline import TEXT_SQL

# Each way a part is left out: blank, padded, the clipper being the broadcaster, no game.
CLIPS = [
    ("Ace in overtime", "shroud", "fan42", "Valorant"),
    ("  padded  ", " shroud ", "shroud", None),
    ("", "tenz", "", ""),
    ("Title only", "", "", None),
    ("   ", "   ", "clipper", "Chess"),
]


@pytest.mark.django_db
def test_the_reference_text_hashes_to_the_clips_text_hash():
    Clip.objects.bulk_create(
        Clip(
            twitch_clip_id=f"ref-{n}",
            title=title,
            broadcaster_name=broadcaster,
            creator_name=creator,
            game_name=game,
        )
        for n, (title, broadcaster, creator, game) in enumerate(CLIPS)
    )
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT md5({TEXT_SQL}), text_hash FROM clips")
        rows = cursor.fetchall()
    assert len(rows) == len(CLIPS)
    assert all(ours == theirs for ours, theirs in rows), rows
