"""Demo clips: realistic, deterministic, and loadable again and again without collisions."""

import io
from datetime import UTC, datetime, timedelta

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db.models import Count
from django.utils import timezone

from embeddings.demo.generator import GAMES, generate_demo_clips
from embeddings.demo.loader import load_demo_clips
from embeddings.models import Clip

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)


def test_the_same_seed_gives_the_same_clips_and_another_seed_different_ones() -> None:
    first = list(generate_demo_clips(300, seed=7, now=NOW))
    again = list(generate_demo_clips(300, seed=7, now=NOW))
    other = list(generate_demo_clips(300, seed=8, now=NOW))

    assert first == again
    assert [clip.title for clip in first] != [clip.title for clip in other]


def test_generated_clips_look_like_a_clip_site() -> None:
    clips = list(generate_demo_clips(2000, seed=1, now=NOW))

    assert len({clip.twitch_clip_id for clip in clips}) == len(clips)
    assert len({clip.broadcaster_name for clip in clips}) > 150
    assert len({clip.game_name for clip in clips}) == len(GAMES) + 1  # every game, and none
    assert all(NOW - timedelta(days=90) <= clip.created_at <= NOW for clip in clips)
    for clip in clips:
        assert (clip.game_id is None) == (clip.game_name is None)


def test_a_game_s_clips_talk_about_that_game() -> None:
    """What makes semantic search meaningful: Valorant clips mention Valorant things."""
    valorant = next(game for game in GAMES if game.name == "Valorant")
    vocabulary = {word.lower() for values in valorant.fillers.values() for word in values}
    titles = [
        clip.title.lower()
        for clip in generate_demo_clips(2000, seed=2, now=NOW)
        if clip.game_name == "Valorant"
    ]

    assert titles
    assert not any("pentakill" in title or "creeper" in title for title in titles)
    assert sum(any(word in title for word in vocabulary) for title in titles) > len(titles) / 2


@pytest.mark.django_db
def test_load_writes_exactly_count_clips_with_realistic_mix() -> None:
    before = timezone.now()

    result = load_demo_clips(2000, seed=3)

    clips = Clip.objects.all()
    assert result.loaded == clips.count() == 2000
    removed = clips.filter(is_removed=True).count()
    assert result.removed == removed
    assert result.live == 2000 - removed
    assert 0.01 <= removed / 2000 <= 0.06
    assert clips.filter(game_id__isnull=True, game_name__isnull=True).exists()
    assert [c for c in clips.values_list("creator_name", "broadcaster_name") if c[0] == c[1]]
    assert all(clip.embedding_attempts == 0 and clip.embedding is None for clip in clips)

    duplicated_texts = clips.values("text_hash").annotate(n=Count("id")).filter(n__gt=1)
    assert duplicated_texts.exists()

    recent = clips.filter(created_at__gte=before - timedelta(days=7)).count()
    assert 0.1 <= recent / 2000 <= 0.3
    assert clips.filter(created_at__lt=before - timedelta(days=60)).exists()


@pytest.mark.django_db
def test_a_second_load_adds_more_clips_with_new_ids() -> None:
    load_demo_clips(500, seed=0)
    load_demo_clips(500, seed=0)

    assert Clip.objects.count() == 1000
    assert Clip.objects.values("twitch_clip_id").distinct().count() == 1000


@pytest.mark.django_db
def test_load_keeps_clips_that_are_not_demo_clips() -> None:
    Clip.objects.create(
        twitch_clip_id="RealClip-abc", title="t", broadcaster_name="b", creator_name="c"
    )

    load_demo_clips(100)

    assert Clip.objects.count() == 101


@pytest.mark.django_db
def test_replace_empties_the_table_first() -> None:
    Clip.objects.create(
        twitch_clip_id="RealClip-abc", title="t", broadcaster_name="b", creator_name="c"
    )
    load_demo_clips(300)

    load_demo_clips(200, replace=True)

    assert Clip.objects.count() == 200
    assert not Clip.objects.filter(twitch_clip_id="RealClip-abc").exists()


@pytest.mark.django_db
def test_command_loads_and_reports_live_and_removed() -> None:
    out = io.StringIO()

    call_command("load_demo_clips", "--count", "400", "--seed", "5", stdout=out)
    call_command("load_demo_clips", "--count", "100", "--replace", stdout=out)

    removed = Clip.objects.filter(is_removed=True).count()
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("Loaded 400 demo clips (")
    assert lines[1].startswith(
        f"Loaded 100 demo clips ({100 - removed} live, {removed} removed) in "
    )
    assert lines[1].endswith("s")
    assert Clip.objects.count() == 100


@pytest.mark.django_db
@pytest.mark.parametrize("count", ["0", "-5"])
def test_command_refuses_a_count_that_is_not_positive(count: str) -> None:
    with pytest.raises(CommandError) as error:
        call_command("load_demo_clips", "--count", count, stdout=io.StringIO())

    assert error.value.returncode == 2
    assert "--count" in str(error.value)
    assert Clip.objects.count() == 0
