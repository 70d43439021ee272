"""Clips for tests to embed: plain numbered rows whose texts a test can predict."""

from embeddings.models import Clip


def make_clips(count: int, *, removed_every: int = 0) -> list[Clip]:
    clips = [
        Clip(
            twitch_clip_id=f"clip-{i}",
            title=f"Clip number {i}",
            broadcaster_name=f"streamer{i % 7}",
            creator_name=f"viewer{i % 11}",
            game_name=["Valorant", "Minecraft", None][i % 3],
            is_removed=bool(removed_every) and i % removed_every == 0,
        )
        for i in range(count)
    ]
    return Clip.objects.bulk_create(clips)
