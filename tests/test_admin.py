"""The admin as operators use it: who may see what, the coverage numbers, the actions."""

import re
from datetime import timedelta

import numpy as np
import pytest
from django.contrib.auth.models import Permission, User
from django.contrib.messages import get_messages
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from embeddings.app_settings import embedding_settings
from embeddings.coverage import coverage_report
from embeddings.models import BackfillRun, Clip, served_settings
from tests.support.clips import make_clips
from tests.support.commands import backfill, embed
from tests.support.openai_server import expected_vector
from tests.support.own_queue import queue_of_its_own

pytestmark = pytest.mark.django_db(transaction=True)

COVERAGE = "/admin/embeddings/clip/coverage/"
EMBED_PENDING = "/admin/embeddings/clip/coverage/embed-pending/"
CHANGELIST = "/admin/embeddings/clip/"
FAKE_KEY = "sk-admin.test-DO-NOT-SHOW-4f9c1e"


@pytest.fixture
def catalogue(embedding_config) -> dict[str, list[int]]:
    """100 live clips and 10 removed: 60 current, 10 stale, 30 never embedded; 5 failed."""
    embedding_config(OPENAI_API_KEY=FAKE_KEY)
    clips = make_clips(110, removed_every=11)
    live = [c.pk for c in clips if not c.is_removed]
    assert len(live) == 100
    embed(live[:70])
    stale, never = live[60:70], live[70:]
    for pk in stale:  # an edited title makes the stored vector stale
        Clip.objects.filter(pk=pk).update(title=f"Edited title {pk}")
    Clip.objects.filter(pk__in=never[:3]).update(embedding_error="rejected by the API: bad input")
    Clip.objects.filter(pk__in=[never[3], stale[0]]).update(
        embedding_error="gave up after 6 retries: timeout"
    )
    return {"live": live, "current": live[:60], "stale": stale, "never": never}


@pytest.fixture
def own_queue(unique_prefix: str):
    """Tasks this test queues, and the qclusters it can see, are its own (none runs)."""
    with queue_of_its_own(unique_prefix) as name:
        yield name


def staff(username: str, *permissions: str) -> User:
    user = User.objects.create_user(username, password="pw", is_staff=True)
    for codename in permissions:
        user.user_permissions.add(Permission.objects.get(codename=codename))
    return user


def run_action(client, action: str, ids: list[int]):
    return client.post(
        CHANGELIST,
        {"action": action, "_selected_action": [str(i) for i in ids], "index": "0"},
        follow=True,
    )


def message_texts(response) -> list[str]:
    return [str(m) for m in get_messages(response.wsgi_request)]


def number(html: str, element_id: str) -> str:
    match = re.search(rf'id="{element_id}">([^<]*)<', html)
    assert match, element_id
    return match.group(1)


# --- who may see what ------------------------------------------------------------------------


def test_anonymous_users_are_sent_to_the_login_page(client):
    response = client.get(COVERAGE)

    assert response.status_code == 302
    assert response["Location"].startswith(reverse("admin:login"))
    assert reverse("admin:embeddings_clip_coverage") == COVERAGE


def test_staff_without_the_view_permission_is_refused(client):
    client.force_login(staff("nobody"))

    assert client.get(COVERAGE).status_code == 403
    assert client.get(CHANGELIST).status_code == 403


def test_staff_who_may_only_view_clips_sees_the_page_but_cannot_run_actions(client, catalogue):
    client.force_login(staff("viewer", "view_clip"))

    page = client.get(COVERAGE)
    changelist = client.get(CHANGELIST)

    assert page.status_code == 200
    assert number(page.content.decode(), "coverage-percent") == "60.0%"
    assert changelist.status_code == 200
    assert "embed_selected" not in changelist.content.decode()
    never = catalogue["never"][:2]
    run_action(client, "embed_selected", never)
    run_action(client, "clear_embeddings", catalogue["current"][:2])
    assert not Clip.objects.filter(pk__in=never, embedding__isnull=False).exists()
    assert (
        Clip.objects.filter(pk__in=catalogue["current"][:2], embedding__isnull=False).count() == 2
    )
    assert not BackfillRun.objects.filter(trigger="admin").exists()


# --- the coverage page -----------------------------------------------------------------------


def test_the_superuser_sees_the_numbers_the_database_holds(admin_client, catalogue):
    config = embedding_settings()

    html = admin_client.get(COVERAGE).content.decode()

    live = Clip.objects.live()
    current = live.current(config.model, config.dimensions).count()
    assert current == 60 and live.count() == 100
    assert number(html, "coverage-percent") == "60.0%"
    assert number(html, "coverage-live") == "100"
    assert number(html, "coverage-current") == "60"
    assert number(html, "coverage-missing") == "40"
    assert number(html, "coverage-stale") == "10"
    assert number(html, "coverage-failed") == "5"
    assert number(html, "coverage-never") == "30"
    assert number(html, "coverage-removed") == "10"
    assert "rejected by the API: bad input" in html and "gave up after 6 retries" in html
    assert "<svg" in html and 'class="bar"' in html
    assert config.model in html


def test_an_empty_catalogue_shows_zeros_not_an_error(admin_client):
    html = admin_client.get(COVERAGE).content.decode()

    assert number(html, "coverage-percent") == "0.0%"
    assert number(html, "coverage-live") == "0"
    assert "<svg" in html and "No runs yet" in html


def test_the_report_counts_failures_reasons_models_and_days(catalogue):
    config = embedding_settings()
    other = catalogue["stale"][1:3]
    Clip.objects.filter(pk__in=other).update(embedding_model="text-embedding-ada-002")

    report = coverage_report(config.model, config.dimensions)

    assert (report.live, report.current, report.stale) == (100, 60, 10)
    assert (report.failed, report.never_embedded, report.removed) == (5, 30, 10)
    assert report.failure_reasons == [
        ("rejected by the API: bad input", 3),
        ("gave up after 6 retries: timeout", 2),
    ]
    by_model = {(m.model, m.dimensions): (m.clips, m.current) for m in report.models}
    assert by_model == {(config.model, 768): (68, 60), ("text-embedding-ada-002", 768): (2, 0)}
    assert len(report.days) == 30 and report.days[-1].day == timezone.localdate()
    assert report.days[-1].embedded == 70
    assert report.days[-1].coverage_percent == pytest.approx(60.0)


def test_coverage_over_the_days_counts_what_existed_at_the_end_of_each_day(embedding_config):
    embedding_config()
    now = timezone.now()
    old = make_clips(10)
    Clip.objects.update(created_at=now - timedelta(days=20))
    embed([c.pk for c in old[:4]])
    Clip.objects.filter(pk__in=[c.pk for c in old[:4]]).update(
        embedding_generated_at=now - timedelta(days=10)
    )
    new = Clip.objects.bulk_create(
        Clip(twitch_clip_id=f"new-{i}", title=f"New {i}", broadcaster_name="b", creator_name="c")
        for i in range(10)
    )
    embed([c.pk for c in new[:6]])
    config = embedding_settings()

    days = {d.day: d for d in coverage_report(config.model, config.dimensions).days}

    today = timezone.localdate()
    assert days[today - timedelta(days=21)].coverage_percent is None  # no clips yet
    assert days[today - timedelta(days=11)].coverage_percent == 0
    assert days[today - timedelta(days=10)].embedded == 4
    assert days[today - timedelta(days=10)].coverage_percent == pytest.approx(40.0)
    assert days[today - timedelta(days=1)].coverage_percent == pytest.approx(40.0)
    assert days[today].embedded == 6
    assert days[today].coverage_percent == pytest.approx(50.0)


def test_the_page_is_reachable_from_the_changelist_and_the_app_index_and_links_on(
    admin_client, catalogue
):
    changelist = admin_client.get(CHANGELIST).content.decode()
    app_index = admin_client.get(reverse("admin:app_list", args=["embeddings"])).content.decode()
    page = admin_client.get(COVERAGE).content.decode()

    assert f'href="{COVERAGE}"' in changelist
    assert f'href="{COVERAGE}"' in app_index
    assert f'href="{reverse("admin:embeddings_backfillrun_changelist")}"' in page
    assert f'href="{reverse("admin:django_q_schedule_changelist")}"' in page
    run = BackfillRun.objects.latest("started_at")
    assert f'href="{reverse("admin:embeddings_backfillrun_change", args=[run.pk])}"' in page


# --- list and form pages ---------------------------------------------------------------------

VECTOR_READ = re.compile(r'"clips"\."embedding"(?!_)(?! IS (NOT )?NULL)')


def test_list_and_form_pages_never_load_the_vector(admin_client, catalogue):
    stale = catalogue["stale"][1]
    pages = [
        CHANGELIST,
        CHANGELIST + "?stale=yes",
        CHANGELIST + "?failed=yes&has_embedding=no",
        CHANGELIST + "?q=Clip",
        CHANGELIST + "?o=6",  # sorted by embedding state
        reverse("admin:embeddings_clip_change", args=[stale]),
        reverse("admin:embeddings_clip_add"),
    ]
    for url in pages:
        with CaptureQueriesContext(connection) as queries:
            response = admin_client.get(url)
        assert response.status_code == 200, url
        selects = [q["sql"] for q in queries if "clips" in q["sql"]]
        assert selects, url
        assert not [sql for sql in selects if VECTOR_READ.search(sql)], url
    change = admin_client.get(reverse("admin:embeddings_clip_change", args=[stale])).content
    assert b"stale" in change and b"Edited title" in change
    assert b'name="embedding"' not in change


def test_the_filters_find_stale_failed_and_unembedded_clips(admin_client, catalogue):
    def count(query: str) -> int:
        return admin_client.get(CHANGELIST + query).context["cl"].result_count

    config = embedding_settings()
    assert count("?stale=yes&is_removed__exact=0") == 10
    assert count("?stale=no") == 60
    assert count("?failed=yes") == 5
    assert count("?has_embedding=no&is_removed__exact=0") == 30
    assert count(f"?embedding_model={config.model}") == 70
    assert count("?embedding_model=-") == 40


def test_saving_a_clip_in_the_form_keeps_its_vector(admin_client, catalogue):
    pk = catalogue["current"][0]
    clip = Clip.objects.get(pk=pk)
    url = reverse("admin:embeddings_clip_change", args=[pk])

    response = admin_client.post(
        url,
        {
            "twitch_clip_id": clip.twitch_clip_id,
            "title": clip.title,
            "broadcaster_name": "someone else",
            "creator_name": clip.creator_name,
            "game_id": "",
            "game_name": "",
            "is_removed": "",
            "created_at_0": "2026-01-01",
            "created_at_1": "00:00:00",
        },
    )

    assert response.status_code == 302
    saved = Clip.objects.get(pk=pk)
    assert saved.broadcaster_name == "someone else"
    np.testing.assert_allclose(np.asarray(saved.embedding), np.asarray(clip.embedding))


# --- actions ---------------------------------------------------------------------------------


def test_the_embed_action_embeds_the_selected_clips_through_the_pipeline(admin_client, catalogue):
    chosen = [*catalogue["stale"][:3], *catalogue["never"][:4]]

    response = run_action(admin_client, "embed_selected", chosen)

    assert response.status_code == 200
    assert any("Embedded 7 of 7 clips" in m for m in message_texts(response))
    texts = dict(Clip.objects.with_text().filter(pk__in=chosen).values_list("pk", "text"))
    for clip in Clip.objects.filter(pk__in=chosen):
        assert clip.embedding_text_hash == clip.text_hash
        np.testing.assert_allclose(
            np.asarray(clip.embedding), expected_vector(texts[clip.pk], 768), rtol=1e-6
        )
    run = BackfillRun.objects.get(trigger="admin")
    assert (run.status, run.processed) == (BackfillRun.Status.SUCCEEDED, 7)


def test_the_embed_action_leaves_removed_clips_alone(admin_client, catalogue):
    removed = list(Clip.objects.filter(is_removed=True).values_list("pk", flat=True)[:2])

    response = run_action(admin_client, "embed_selected", [*removed, catalogue["never"][0]])

    messages = message_texts(response)
    assert any("2 removed clips were left alone" in m for m in messages)
    assert any("Embedded 1 of 1 clip (" in m for m in messages)
    assert not Clip.objects.filter(pk__in=removed, embedding__isnull=False).exists()


def test_beyond_the_limit_the_embed_action_queues_tasks_that_embed(
    admin_client, catalogue, monkeypatch, own_queue
):
    from django.contrib import admin

    import embeddings.tasks

    queued = []
    monkeypatch.setattr(admin.site._registry[Clip], "embed_now_limit", 3)
    monkeypatch.setattr(admin.site._registry[Clip], "queue_chunk", 2)
    monkeypatch.setattr(
        "django_q.tasks.async_task", lambda func, *args, **kw: queued.append((func, args, kw))
    )
    chosen = catalogue["never"][:5]

    response = run_action(admin_client, "embed_selected", chosen)

    (queued_message,) = [m for m in message_texts(response) if "Queued" in m]
    assert "Queued 5 clips as 3 django-q2 tasks in group admin-embed-" in queued_message
    # Nothing takes them yet: the message says so and what to start.
    assert "no qcluster is running to take them: start `manage.py qcluster`" in queued_message
    assert [args[0] for _, args, _ in queued] == [chosen[:2], chosen[2:4], chosen[4:]]
    assert not Clip.objects.filter(pk__in=chosen, embedding__isnull=False).exists()
    for func, args, _ in queued:  # what a qcluster worker would do
        assert func == "embeddings.tasks.embed_clip_ids"
        embeddings.tasks.embed_clip_ids(*args)
    assert Clip.objects.filter(pk__in=chosen, embedding__isnull=False).count() == 5


def test_the_clear_action_clears_the_vector_and_its_provenance(admin_client, catalogue):
    chosen = catalogue["current"][:5]

    response = run_action(admin_client, "clear_embeddings", chosen)

    assert any("Cleared the embeddings of 5 clips" in m for m in message_texts(response))
    cleared = Clip.objects.filter(pk__in=chosen).values(
        "embedding",
        "embedding_model",
        "embedding_generated_at",
        "embedding_dimensions",
        "embedding_text_hash",
    )
    assert all(value is None for row in cleared for value in row.values())
    assert Clip.objects.filter(pk__in=catalogue["current"][5:], embedding__isnull=False).count()


def test_with_embedding_disabled_the_actions_do_nothing_and_say_so(
    admin_client, catalogue, settings, openai_server
):
    settings.EMBEDDING_ENABLED = False
    requests = openai_server.stats.requests

    embedded = run_action(admin_client, "embed_selected", catalogue["never"][:2])
    cleared = run_action(admin_client, "clear_embeddings", catalogue["current"][:2])

    assert any("EMBEDDING_ENABLED is false" in m for m in message_texts(embedded))
    assert any("EMBEDDING_ENABLED is false" in m for m in message_texts(cleared))
    assert openai_server.stats.requests == requests
    assert Clip.objects.filter(pk__in=catalogue["current"][:2], embedding__isnull=False).count()
    assert not Clip.objects.filter(pk__in=catalogue["never"][:2], embedding__isnull=False).exists()


def test_a_missing_api_key_is_an_error_message_not_a_server_error(
    admin_client, catalogue, settings
):
    settings.OPENAI_API_KEY = None

    response = run_action(admin_client, "embed_selected", catalogue["never"][:2])

    assert response.status_code == 200
    assert any("OPENAI_API_KEY is not set" in m for m in message_texts(response))
    assert not Clip.objects.filter(pk__in=catalogue["never"][:2], embedding__isnull=False).exists()


def test_the_api_key_appears_on_no_admin_page(admin_client, catalogue, settings):
    assert settings.OPENAI_API_KEY == FAKE_KEY
    run = BackfillRun.objects.latest("started_at")
    pages = [
        reverse("admin:index"),
        reverse("admin:app_list", args=["embeddings"]),
        CHANGELIST,
        reverse("admin:embeddings_clip_change", args=[catalogue["current"][0]]),
        COVERAGE,
        reverse("admin:embeddings_backfillrun_changelist"),
        reverse("admin:embeddings_backfillrun_change", args=[run.pk]),
    ]
    bodies = [admin_client.get(url).content.decode() for url in pages]
    bodies.append(
        run_action(admin_client, "embed_selected", catalogue["never"][:2]).content.decode()
    )

    assert bodies and all(FAKE_KEY not in body for body in bodies)
    assert all(FAKE_KEY[:12] not in body for body in bodies)


# --- run history -----------------------------------------------------------------------------


def test_backfill_runs_are_history_nobody_edits(admin_client, catalogue):
    run = BackfillRun.objects.latest("started_at")

    listing = admin_client.get(reverse("admin:embeddings_backfillrun_changelist"))
    detail = admin_client.get(reverse("admin:embeddings_backfillrun_change", args=[run.pk]))

    assert listing.status_code == 200 and "succeeded" in listing.content.decode()
    assert detail.status_code == 200 and b'name="_save"' not in detail.content
    assert admin_client.get(reverse("admin:embeddings_backfillrun_add")).status_code == 403
    delete = reverse("admin:embeddings_backfillrun_delete", args=[run.pk])
    assert admin_client.post(delete, {"post": "yes"}).status_code == 403
    assert BackfillRun.objects.filter(pk=run.pk).exists()


def test_a_clip_page_lists_its_nearest_clips_without_calling_the_api(
    admin_client, catalogue, openai_server
):
    pk = catalogue["current"][0]
    requests = openai_server.stats.requests

    page = admin_client.get(reverse("admin:embeddings_clip_change", args=[pk])).content.decode()

    assert "Nearest live clips" in page
    neighbours = re.findall(r'href="/admin/embeddings/clip/(\d+)/change/"[^>]*>[^<]*</a> \(', page)
    assert len(neighbours) == 10
    assert str(pk) not in neighbours
    assert {int(n) for n in neighbours} <= set(catalogue["current"])  # never stale or unembedded
    assert openai_server.stats.requests == requests


def test_a_clip_without_a_current_vector_says_it_has_no_neighbours(admin_client, catalogue):
    pk = catalogue["never"][5]

    page = admin_client.get(reverse("admin:embeddings_clip_change", args=[pk])).content.decode()

    assert "this clip has no current embedding" in page


def readonly(html: str, label: str) -> str:
    """The value a read-only admin page shows beside `label`."""
    match = re.search(rf"<label>{label}:</label>\s*<div class=\"readonly\">(.*?)</div>", html, re.S)
    assert match, label
    return match.group(1).strip()


def test_a_run_page_reads_like_the_commands_summary(admin_client, embedding_config, unique_prefix):
    # A model without a list price, as a local or self-hosted one is.
    embedding_config(
        EMBEDDING_MODEL=f"text-embedding-3-small-{unique_prefix}", EMBEDDING_SEND_DIMENSIONS="true"
    )
    make_clips(120)
    output = backfill("--force", "--batch", "50", "--limit", "100")
    assert "Cost: unknown for this model" in output
    run = BackfillRun.objects.get()

    html = admin_client.get(reverse("admin:embeddings_backfillrun_change", args=[run.pk]))
    html = html.content.decode()

    assert (
        readonly(html, "Options") == '<code class="run-flags">--force --batch 50 --limit 100</code>'
    )
    assert "&quot;selection&quot;" not in html and "batch_size" not in html  # no JSON blob
    assert re.fullmatch(r"\d+ ms|\d+\.\d\d s", readonly(html, "Duration").split(" (")[0])
    assert str(run.duration_seconds) not in html
    assert readonly(html, "Cost") == "unknown for this model"
    assert "0.000000" not in html
    assert readonly(html, "Model") == f"text-embedding-3-small-{unique_prefix} at 768 dimensions"
    assert readonly(html, "Processed") == "100"
    listing = admin_client.get(reverse("admin:embeddings_backfillrun_changelist")).content.decode()
    assert re.search(
        r'<td class="field-list_cost"><span title="[^"]*">unknown</span></td>', listing
    )


def test_a_run_page_shows_the_cost_of_a_priced_model_and_how_its_clips_were_chosen(
    admin_client, catalogue
):
    run_action(admin_client, "embed_selected", catalogue["never"][:7])
    run = BackfillRun.objects.get(trigger="admin")
    assert run.cost_usd > 0

    html = admin_client.get(reverse("admin:embeddings_backfillrun_change", args=[run.pk]))
    html = html.content.decode()

    assert readonly(html, "Cost") == f"${run.cost_usd:.6f}"
    flags = '<code class="run-flags">--force --batch 50</code>'
    assert readonly(html, "Options") == f"{flags}; <span>7 clips chosen in the admin</span>"


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [
        (10.250346537000041, "10.25 s"),
        (0.06771719900007156, "68 ms"),
        (123.4, "2 min 3 s"),
        (3725, "1 h 02 min"),
        (0, "0 ms"),
    ],
)
def test_durations_are_rounded_as_a_person_reads_them(seconds, shown, admin_client):
    run = BackfillRun.objects.create(
        model="text-embedding-3-small",
        dimensions=768,
        status=BackfillRun.Status.SUCCEEDED,
        finished_at=timezone.now(),
        duration_seconds=seconds,
    )

    html = admin_client.get(reverse("admin:embeddings_backfillrun_change", args=[run.pk]))
    listing = admin_client.get(reverse("admin:embeddings_backfillrun_changelist"))

    assert readonly(html.content.decode(), "Duration") == shown
    assert f'<td class="field-duration">{shown}</td>' in listing.content.decode()


def test_the_sidebar_and_every_count_read_right_in_the_singular(
    admin_client, embedding_config, own_queue
):
    embedding_config()
    live, removed = _one_live_one_removed()

    index = admin_client.get(reverse("admin:index")).content.decode()
    assert ">Embedding batches<" in index and "batchs" not in index.lower()
    estimate = admin_client.get(EMBED_PENDING).content.decode()
    assert re.search(
        r"Estimated tokens</th><td>[\d,]+ tokens? in at least 1 request</td>", estimate
    )
    assert 'value="Yes, queue 1 clip"' in estimate
    assert "coverage: 0 of 1 live clip</span>" in admin_client.get(COVERAGE).content.decode()

    embedded = message_texts(run_action(admin_client, "embed_selected", [live, removed]))
    assert "1 removed clip was left alone." in embedded
    assert any(m.startswith("Embedded 1 of 1 clip (<a href=") for m in embedded)
    cleared = message_texts(run_action(admin_client, "clear_embeddings", [live]))
    assert cleared == ["Cleared the embedding of 1 clip; the next run embeds it again."]
    queued = admin_client.post(EMBED_PENDING, follow=True)
    assert any(" as 1 django-q2 task in group " in m for m in message_texts(queued))


def _one_live_one_removed() -> tuple[int, int]:
    live, removed = make_clips(2)
    Clip.objects.filter(pk=removed.pk).update(is_removed=True)
    return live.pk, removed.pk


def test_the_clip_list_shows_whole_texts_in_tooltips_and_the_model_in_the_state(
    admin_client, catalogue
):
    long_title = "An unusually long clip title " * 6
    pk = catalogue["current"][0]
    Clip.objects.filter(pk=pk).update(title=long_title)
    embed([pk])

    html = admin_client.get(CHANGELIST).content.decode()

    assert f'<span class="cut" title="{long_title}">{long_title}</span>' in html
    config = served_settings()
    (row,) = [row for row in html.split("<tr") if f"/clip/{pk}/change/" in row]
    state = re.search(r'<td class="field-embedding_status"><span title="([^"]*)">current<', row)
    assert state and state.group(1).startswith(f"{config.model} at {config.dimensions} dimensions")
    assert "column-embedding_model" not in html  # the model is in that tooltip and the filter


def test_settings_that_name_another_version_are_named_with_the_switch_command(
    admin_client, embedding_config, settings
):
    embedding_config()
    make_clips(3)
    served = served_settings()  # the first version comes from the settings
    assert (served.model, served.dimensions, served.storage) == (
        "text-embedding-3-small",
        768,
        "vector",
    )
    assert 'id="unserved-settings"' not in admin_client.get(COVERAGE).content.decode()

    settings.EMBEDDING_MODEL = "text-embedding-3-large"
    settings.EMBEDDING_DIMENSIONS = "1024"  # as the environment gives it
    html = admin_client.get(COVERAGE).content.decode()

    note = re.search(r'id="unserved-settings">(.*?)</div>', html, re.S).group(1)
    assert "<code>EMBEDDING_MODEL=text-embedding-3-large</code> and " in note
    assert "<code>EMBEDDING_DIMENSIONS=1024</code>\n    are set" in note
    assert "serves <strong>text-embedding-3-small</strong> at 768 dimensions (vector)" in note
    assert (
        '<code id="unserved-command">manage.py switch_embeddings --model text-embedding-3-large '
        "--dimensions 1024</code>"
    ) in note
    assert number(html, "coverage-live") == "3"  # the page goes on counting the served version

    settings.EMBEDDING_MODEL, settings.EMBEDDING_DIMENSIONS = "text-embedding-3-small", 768
    settings.EMBEDDING_STORAGE = "halfvec"
    html = admin_client.get(COVERAGE).content.decode()
    assert "<code>EMBEDDING_STORAGE=halfvec</code>\n    is set" in html
    assert (
        "manage.py switch_embeddings --model text-embedding-3-small --dimensions 768 "
        "--storage halfvec</code>"
    ) in html

    settings.EMBEDDING_STORAGE = "vector"  # set back to what is served: nothing to say
    assert 'id="unserved-settings"' not in admin_client.get(COVERAGE).content.decode()


def test_the_coverage_page_counts_clips_with_nothing_to_embed_apart(admin_client, embedding_config):
    embedding_config()
    make_clips(4)
    Clip.objects.create(
        twitch_clip_id="blank", title=" ", broadcaster_name="", creator_name="", game_name=None
    )
    backfill()

    html = admin_client.get(COVERAGE).content.decode()

    assert number(html, "coverage-percent") == "100.0%"
    assert number(html, "coverage-blank") == "1"
    assert "nothing to embed (every text field blank)" in html
    assert number(html, "coverage-missing") == "0" and number(html, "coverage-never") == "0"
