"""A clip whose every text field is blank has nothing to embed: no run asks the API for it or
records it as failed, and coverage counts it apart, so it can reach 100%."""

import pytest

from embeddings.coverage import coverage_counts, coverage_report
from embeddings.models import BackfillRun, Clip
from tests.support.clips import make_clips
from tests.support.commands import backfill

pytestmark = pytest.mark.django_db(transaction=True)


def test_blank_clips_are_nothing_to_embed_and_coverage_reaches_100_percent(
    embedding_config, openai_server
):
    config = embedding_config()
    make_clips(5)
    Clip.objects.create(
        twitch_clip_id="blank", title="  ", broadcaster_name="", creator_name=" ", game_name=None
    )

    first = backfill()
    assert "Total clips: 5" in first and "Failed: 0" in first
    assert openai_server.stats.inputs_received == 5
    assert BackfillRun.objects.get().status == BackfillRun.Status.SUCCEEDED
    assert not Clip.objects.filter(embedding_error__isnull=False).exists()

    report = coverage_report(config.model, config.dimensions)
    assert (report.live, report.blank, report.current, report.missing) == (6, 1, 5, 0)
    assert report.coverage_percent == 100.0
    counts = coverage_counts(config.model, config.dimensions)
    assert (counts.pending, counts.blank) == (0, 1)

    assert "Total clips: 0" in backfill()
    assert openai_server.stats.inputs_received == 5
