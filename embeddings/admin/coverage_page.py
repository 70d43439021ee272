"""The coverage page: how much of the catalogue is searchable, how the runs go, and the button
that queues every pending clip after showing what it will cost."""

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse

from embeddings.admin import wording
from embeddings.admin.coverage_chart import coverage_chart
from embeddings.admin.workers import queued_message
from embeddings.app_settings import unserved_settings
from embeddings.backfill.claims import settle_dead_runs
from embeddings.backfill.estimate import estimate
from embeddings.backfill.selection import Selection
from embeddings.backfill.switch import unfinished_version
from embeddings.coverage import coverage_report
from embeddings.models import BackfillRun, served_settings
from embeddings.tasks import SCHEDULE_NAME, enqueue_backfill

LATEST_RUNS = 5
REFRESH_SECONDS = 5  # while a run goes, the page reloads itself this often
QUEUE_CHUNK = 1000  # clips per queued task, as `--enqueue`'s default


def coverage_view(model_admin, request: HttpRequest) -> HttpResponse:
    # admin_view only checks that the user is active staff.
    if not model_admin.has_view_permission(request):
        raise PermissionDenied
    config = served_settings()
    report = coverage_report(config.model, config.dimensions)
    settle_dead_runs()  # a reader of the history never shows a dead run as running
    running = list(BackfillRun.objects.filter(status=BackfillRun.Status.RUNNING))
    building = unfinished_version()
    unserved = unserved_settings(config)
    context = {
        **model_admin.admin_site.each_context(request),
        "title": "Embedding coverage",
        "opts": model_admin.model._meta,
        "app_label": model_admin.model._meta.app_label,
        "config": config,
        "api_key_set": bool(config.api_key),
        "report": report,
        "building": building,
        "unserved": unserved,
        # A switch to what is set has begun: its command resumes it.
        "unserved_building": unserved is not None
        and building is not None
        and (building.model, building.dimensions, building.storage)
        == (unserved.model, unserved.dimensions, unserved.storage),
        "chart": coverage_chart(report.days),
        "runs": _latest_runs(),
        "schedule": _schedule(),
        "can_view_runs": request.user.has_perm("embeddings.view_backfillrun"),
        "running": running,
        "refresh_seconds": REFRESH_SECONDS if running else None,
        "can_embed": model_admin.has_change_permission(request),
    }
    return TemplateResponse(request, "admin/embeddings/clip/coverage.html", context)


def embed_pending_view(model_admin, request: HttpRequest) -> HttpResponse:
    """GET: the estimate (clips, tokens, cost, time) and a confirm button; POST: queue the work
    as django-q2 tasks, like `backfill_embeddings --enqueue`. Needs "change clip"."""
    if not model_admin.has_change_permission(request):
        raise PermissionDenied
    config = served_settings()
    coverage_url = reverse("admin:embeddings_clip_coverage")
    if model_admin.refused_while_disabled(request, config, "queued"):
        return HttpResponseRedirect(coverage_url)
    selection = Selection.of(config)
    if request.method == "POST":
        try:
            group, tasks = enqueue_backfill(selection, chunk=QUEUE_CHUNK, batch_size=50)
        except Exception as err:  # the broker (Redis or the ORM queue) is unreachable
            model_admin.message_user(request, f"Could not queue the clips: {err}", messages.ERROR)
        else:
            _say_queued(model_admin, request, group, tasks)
        return HttpResponseRedirect(coverage_url)
    pending = estimate(selection.queryset(), config)
    context = {
        **model_admin.admin_site.each_context(request),
        "title": "Embed all pending clips?",
        "opts": model_admin.model._meta,
        "config": config,
        "estimate": pending,
        "time_at_limits": wording.duration(pending.minutes_at_limits * 60),
        "coverage_url": coverage_url,
    }
    return TemplateResponse(request, "admin/embeddings/clip/embed_pending.html", context)


def _say_queued(model_admin, request: HttpRequest, group: str, tasks: int) -> None:
    if not tasks:
        model_admin.message_user(
            request, "Nothing was queued: every live clip has a current vector.", messages.INFO
        )
        return
    text, taken = queued_message("the pending clips", tasks, group)
    if taken:
        text += " The runs appear below as they go."
    model_admin.message_user(request, text, messages.SUCCESS if taken else messages.WARNING)


def _latest_runs() -> list[BackfillRun]:
    runs = list(BackfillRun.objects.order_by("-started_at")[:LATEST_RUNS])
    for run in runs:
        run.duration_text = wording.duration(run.duration_seconds)
    return runs


def _schedule():
    from django_q.models import Schedule

    return Schedule.objects.filter(name=SCHEDULE_NAME).order_by("pk").first()
