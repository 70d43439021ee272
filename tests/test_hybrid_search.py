"""Hybrid search as a user meets it: a streamer's handle finds that streamer's clips, words
find the clips that hold them, a clip's own text still finds the clip, and neither side lets a
removed clip or a stale vector through.

The test server's vectors are random per text, so they carry no meaning: whatever a handle
query gets right here, the text side got right.
"""

import io
import json
import re
import subprocess
import sys

import pytest
from django.core.management import call_command
from django.db import connection, transaction

from embeddings.demo.loader import load_demo_clips
from embeddings.exceptions import InvalidSearch
from embeddings.models import Clip
from embeddings.search.hybrid import RANKED_MATCHES, TextQuery, hybrid_sql, text_sql
from embeddings.search.vector import SEARCH_SETTINGS_SQL, embed_query
from tests.support.clips import make_clips
from tests.support.commands import ROOT, backfill

pytestmark = pytest.mark.django_db(transaction=True)

# Broadcasters whose handles the default parser would split or stem, and look-alikes that a
# split handle would match: `saltyknight_861` parses as `saltyknight` and `861`.
STREAMERS = ("saltyknight_861", "SaltyKnight", "saltyknight_862", "GoldenGamerOW334", "PixelGhost")
GAMES = ("Valorant", "Elden Ring", None)
TITLES = (
    "no-hit Malenia on first try",
    "insane 1v4 clutch on Ascent",
    "found 9 diamonds in the first minute",
    "chat can't believe this",
)


def streamer_clips(count: int = 60, *, removed_every: int = 0) -> list[Clip]:
    """Clips by STREAMERS in turn, each clipped by a viewer, titles and games in turn."""
    return Clip.objects.bulk_create(
        Clip(
            twitch_clip_id=f"hybrid-{i}",
            title=TITLES[i % len(TITLES)],
            broadcaster_name=STREAMERS[i % len(STREAMERS)],
            creator_name=f"viewer_{i % 9}",
            game_name=GAMES[i % len(GAMES)],
            is_removed=bool(removed_every) and i % removed_every == 0,
        )
        for i in range(count)
    )


def text_of(clip: Clip) -> str:
    return Clip.objects.with_text().values_list("text", flat=True).get(pk=clip.pk)


def search(*args: str) -> list[dict]:
    out = io.StringIO()
    call_command("search_clips", *args, "--json", stdout=out, stderr=io.StringIO())
    return json.loads(out.getvalue())


def live_ids(**filters) -> set[int]:
    return set(Clip.objects.live().filter(**filters).values_list("pk", flat=True))


def test_a_handle_returns_that_broadcasters_clips_first_though_vectors_carry_no_meaning(
    embedding_config,
):
    embedding_config()
    streamer_clips(60)
    backfill()
    theirs = live_ids(broadcaster_name="saltyknight_861")

    hybrid = Clip.objects.similar_to("saltyknight_861", k=20, mode="hybrid")
    vector = Clip.objects.similar_to("saltyknight_861", k=20)

    assert len(theirs) == 12
    assert {c.pk for c in hybrid[:12]} == theirs
    assert all(c.broadcaster_name != "saltyknight_861" for c in hybrid[12:])
    assert len(hybrid) == 20  # the vector side fills the rest
    assert len({c.pk for c in vector[:12]} & theirs) < 12  # what the vectors alone manage


def test_handles_stay_whole_and_match_whatever_the_case(embedding_config):
    embedding_config()
    streamer_clips(60)

    def found(query: str) -> list[int]:
        return [c.pk for c in Clip.objects.similar_to(query, k=100, mode="text")]

    assert set(found("saltyknight_861")) == live_ids(broadcaster_name="saltyknight_861")
    assert set(found("SALTYKNIGHT_862")) == live_ids(broadcaster_name="saltyknight_862")
    assert set(found("goldengamerow334")) == live_ids(broadcaster_name="GoldenGamerOW334")
    assert set(found("viewer_4")) == live_ids(creator_name="viewer_4")
    # `saltyknight` is also a part of `saltyknight_861`: those clips match, after the handle's.
    salty = found("SaltyKnight")
    theirs = live_ids(broadcaster_name="SaltyKnight")
    assert set(salty[: len(theirs)]) == theirs
    assert set(salty[len(theirs) :]) == live_ids(broadcaster_name__startswith="saltyknight_")


def test_the_demo_handles_match_exactly_their_broadcasters_clips(embedding_config):
    embedding_config()
    load_demo_clips(1000, seed=0, replace=True)

    for handle in ("lunarfoxyt322", "GoldenGamerOW334", "pixelghost226", "saltyknight_861"):
        found = Clip.objects.similar_to(handle, k=100, mode="text")
        theirs = live_ids(broadcaster_name=handle)
        assert theirs and {c.pk for c in found} == theirs, handle


def test_words_of_a_title_and_a_game_find_the_clips_holding_them_all(embedding_config):
    embedding_config()
    streamer_clips(60)

    malenia = Clip.objects.similar_to("Malenia no hit", k=100, mode="text")
    valorant = Clip.objects.similar_to("valorant clutches", k=100, mode="text")  # stemmed

    assert {c.pk for c in malenia} == live_ids(title=TITLES[0])
    assert {c.pk for c in valorant} == live_ids(title=TITLES[1], game_name="Valorant")
    assert len(valorant) < len(live_ids(title=TITLES[1]))  # the game's word counts too
    assert Clip.objects.similar_to("speedrun", k=10, mode="text") == []


def test_a_clips_own_text_still_comes_back_first(embedding_config):
    embedding_config()
    clips = streamer_clips(60)
    backfill()

    for target in (clips[7], clips[20], clips[33]):
        found = Clip.objects.similar_to(text_of(target), k=10, mode="hybrid")
        assert found[0].pk == target.pk
        assert found[0].distance == pytest.approx(0.0, abs=1e-5)


def test_text_mode_returns_live_clips_only_and_calls_no_api(embedding_config, openai_server):
    embedding_config()
    streamer_clips(60, removed_every=4)  # no vectors at all

    found = Clip.objects.similar_to("saltyknight_861", k=100, mode="text")

    theirs = Clip.objects.filter(broadcaster_name="saltyknight_861")
    assert theirs.filter(is_removed=True).count() == 3
    assert {c.pk for c in found} == live_ids(broadcaster_name="saltyknight_861")
    assert all(c.distance is None for c in found)
    assert openai_server.stats.requests == 0


def test_hybrid_never_takes_a_removed_clip_or_a_stale_vector_from_the_vector_side(
    embedding_config,
):
    config = embedding_config()
    clips = streamer_clips(60)
    backfill()
    removed, stale, other_model = clips[10], clips[15], clips[25]  # all saltyknight_861's
    removed_text, stale_text = text_of(removed), text_of(stale)
    Clip.objects.filter(pk=removed.pk).update(is_removed=True)
    Clip.objects.filter(pk=stale.pk).update(title="a new title nobody embedded")
    Clip.objects.filter(pk=other_model.pk).update(embedding_model="text-embedding-ada-002")

    # Their vectors equal these queries' exactly: the vector side would put each first.
    assert removed.pk not in {c.pk for c in Clip.objects.similar_to(removed_text, mode="hybrid")}
    assert stale.pk not in {c.pk for c in Clip.objects.similar_to(stale_text, mode="hybrid")}

    # Named by the query, the stale and other-model clips come back, from the words alone.
    found = {c.pk: c for c in Clip.objects.similar_to("saltyknight_861", k=30, mode="hybrid")}
    assert removed.pk not in found
    assert found[stale.pk].distance is None and found[other_model.pk].distance is None
    current = set(
        Clip.objects.live().current(config.model, config.dimensions).values_list("pk", flat=True)
    )
    assert all(c.pk in current for c in found.values() if c.distance is not None)


def test_similar_to_is_still_nearest_by_vector_unless_told(embedding_config):
    embedding_config()
    streamer_clips(60)
    backfill()

    default = Clip.objects.similar_to("saltyknight_861", k=15)
    vector = Clip.objects.similar_to("saltyknight_861", k=15, mode="vector")

    assert [c.pk for c in default] == [c.pk for c in vector]
    assert [c.distance for c in default] == sorted(c.distance for c in default)
    assert all(c.distance is not None for c in default)
    with pytest.raises(InvalidSearch, match="mode must be one of hybrid, vector, text"):
        Clip.objects.similar_to("saltyknight_861", mode="semantic")


def test_a_clip_as_the_query_leaves_it_out_and_puts_its_broadcasters_clips_first(
    embedding_config, openai_server
):
    embedding_config()
    clips = streamer_clips(60)
    backfill()
    target = clips[3]  # GoldenGamerOW334
    requests = openai_server.stats.requests

    found = Clip.objects.similar_to(target, k=15, mode="hybrid")

    theirs = live_ids(broadcaster_name="GoldenGamerOW334") - {target.pk}
    assert target.pk not in {c.pk for c in found}
    assert {c.pk for c in found[: len(theirs)]} == theirs
    assert openai_server.stats.requests == requests  # its stored vector


def test_the_hybrid_statement_walks_the_hnsw_and_the_gin_index(embedding_config):
    config = embedding_config()
    make_clips(2000, removed_every=20)
    backfill("--rebuild-index")
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE clips")  # moves new rows out of the GIN pending list
    query = "1234"  # a word of one clip's title: the GIN index is worth walking
    vector = embed_query(query, config)

    sql, params = hybrid_sql(Clip.objects.all(), vector, TextQuery(query), 10, config=config)
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(SEARCH_SETTINGS_SQL, ["100"])
        cursor.execute("EXPLAIN " + sql, params)
        plan = "\n".join(row[0] for row in cursor.fetchall())
        cursor.execute(sql, params)
        rows = cursor.fetchall()

    plan = re.sub(r"'\[[^]]*\]'", "'[...]'", plan)  # the query vector, 768 numbers
    assert "Index Scan using clips_embedding_hnsw" in plan, plan
    assert "Bitmap Index Scan on clips_search_document_gin" in plan, plan
    assert len(rows) == 10
    assert rows[0][2] == "Clip number 1234"  # found by its words; its vector is another's


def test_command_modes_and_json(embedding_config):
    embedding_config()
    streamer_clips(60)
    backfill("--limit", "30")  # half the clips have a vector
    theirs = live_ids(broadcaster_name="PixelGhost")

    hybrid = search("pixelghost", "-k", "20")  # hybrid by default
    text = search("pixelghost", "--mode", "text", "-k", "50")
    vector = search("pixelghost", "--mode", "vector")

    assert {d["id"] for d in hybrid[: len(theirs)]} == theirs
    assert any(d["distance"] is None for d in hybrid[: len(theirs)])  # no vector: words alone
    assert {d["id"] for d in text} == theirs
    assert all(d["distance"] is None for d in text)
    assert {"id", "distance", "title", "broadcaster_name", "game_name"} <= set(text[0])
    assert all(d["distance"] is not None for d in vector)
    assert [d["distance"] for d in vector] == sorted(d["distance"] for d in vector)


def test_command_text_mode_prints_a_dash_for_distance_and_needs_no_key(embedding_config):
    embedding_config(OPENAI_API_KEY=None)
    streamer_clips(10)
    out = io.StringIO()

    call_command("search_clips", "GoldenGamerOW334", "--mode", "text", stdout=out)

    lines = out.getvalue().splitlines()
    assert lines[0].split() == ["rank", "distance", "title", "broadcaster", "game"]
    assert len(lines) == 3
    assert lines[1].split()[:2] == ["1", "-"] and "GoldenGamerOW334" in lines[1]


def test_command_as_a_process_refuses_an_unknown_mode_with_exit_2(command_env):
    result = subprocess.run(
        [sys.executable, "manage.py", "search_clips", "zelda", "--mode", "fuzzy"],
        cwd=ROOT,
        env=command_env,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 2
    assert "invalid choice: 'fuzzy'" in result.stderr and "hybrid" in result.stderr


def test_a_clip_holding_every_word_ranks_above_one_holding_only_the_name(embedding_config):
    """`zephyrmoth clutch Valorant`: that streamer's clutch Valorant clips come first, whatever
    the vector side makes of their other clips (here: random, and some rank high)."""
    embedding_config()
    others = [
        ("rage moment", "Tetris"),
        ("funny fail", "Minecraft"),
        ("chat goes wild", "Elden Ring"),
        ("speedrun reset", "Celeste"),
    ]
    Clip.objects.bulk_create(
        [
            Clip(
                twitch_clip_id=f"zephyr-{i}",
                title=f"{title} {i}",
                broadcaster_name="zephyrmoth",
                creator_name=f"viewer_{i}",
                game_name=game,
            )
            for i, (title, game) in enumerate(others * 8)
        ]
        + [
            Clip(
                twitch_clip_id=f"zephyr-clutch-{i}",
                title=f"insane clutch {i}",
                broadcaster_name="zephyrmoth",
                creator_name=f"viewer_{i}",
                game_name="Valorant",
            )
            for i in range(2)
        ]
    )
    backfill()

    results = Clip.objects.similar_to("zephyrmoth clutch Valorant", k=5, mode="hybrid")

    assert sorted(clip.title for clip in results[:2]) == ["insane clutch 0", "insane clutch 1"]
    scores = [clip.score for clip in results]
    assert scores == sorted(scores, reverse=True)  # the score shown is the order


def test_the_text_side_ranks_the_first_matches_in_page_order_whichever_way_it_reads(
    embedding_config,
):
    """Where the sample finds a word common, the first pages are read in order; elsewhere the
    whole table goes to the planner (the GIN bitmap on a large one). Both ways rank the first
    RANKED_MATCHES live matches in the table's page order, not in id order."""
    embedding_config()
    Clip.objects.bulk_create(
        Clip(
            twitch_clip_id=f"order-{i}",
            title=f"clip {i}" + (" rarest" if i % 97 == 0 else ""),
            broadcaster_name=f"streamer_{i % 7}",
            creator_name="viewer",
            game_name="Valorant" if i % 2 else "Chess",
            is_removed=i % 11 == 0,
        )
        for i in range(600)
    )
    # Edited rows move to the end of the table: page order is no longer id order.
    first = Clip.objects.order_by("pk").values_list("pk", flat=True)[:40]
    Clip.objects.filter(pk__in=list(first)).update(title="moved")
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE clips")

    def first_matches(word: str) -> set[int]:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT id FROM clips WHERE NOT is_removed"
                " AND search_document @@ plainto_tsquery('english', %s) ORDER BY ctid LIMIT %s",
                [word, RANKED_MATCHES],
            )
            return {row[0] for row in cursor.fetchall()}

    def read_in_order(word: str) -> bool:
        statement, _ = text_sql(Clip.objects.all(), TextQuery(word), RANKED_MATCHES)
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(SEARCH_SETTINGS_SQL, ["100"])
            cursor.execute("EXPLAIN (ANALYZE, COSTS OFF) " + statement)
            plan = [row[0] for row in cursor.fetchall()]
        scan = next(line for line in plan if "Subquery Scan on in_order" in line)
        return "never executed" not in scan

    for word, in_order in (("valorant", True), ("rarest", False)):
        found = Clip.objects.similar_to(word, k=RANKED_MATCHES, mode="text")
        assert {c.pk for c in found} == first_matches(word), word
        assert read_in_order(word) is in_order, word
    assert len(first_matches("valorant")) == RANKED_MATCHES < 270  # live Valorant clips


def test_a_query_with_sql_characters_is_only_words(embedding_config):
    """Percent signs, braces, quotes and backslashes are values bound in the statement."""
    embedding_config()
    streamer_clips(20)
    backfill()

    for query in ("100% {clutch} o'neil \\", "%s %(x)s {} saltyknight_861'"):
        assert Clip.objects.similar_to(query, k=5, mode="text") == []
        assert len(Clip.objects.similar_to(query, k=5, mode="hybrid")) == 5
