"""The admin: clips with their embedding state, the coverage page, the history of runs.

The actions are a thin door into the pipeline the command and the tasks use
(`runs.execute_backfill`, or queued `tasks.embed_clip_ids`); nothing here selects, batches or
writes vectors. Vectors are never loaded into list or form pages: they are large, and only
their state (current, stale, failed, none) means anything to a person.
"""

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db import DatabaseError
from django.db.models import Case, CharField, Q, QuerySet, Value, When
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join

from embeddings.claims import Selection
from embeddings.conf import EmbeddingSettings, embedding_settings
from embeddings.coverage import coverage_report, failed_q, stale_q
from embeddings.coverage_chart import coverage_chart
from embeddings.models import BackfillRun, Clip, current_embedding_q
from embeddings.pipeline import BackfillOptions, BackfillProgress
from embeddings.provider import FatalProviderError
from embeddings.runs import execute_backfill
from embeddings.search import similar_clips
from embeddings.service import build_embedding_service
from embeddings.tasks import SCHEDULE_NAME, enqueue_clip_ids

LATEST_RUNS = 5


def embedding_state(config: EmbeddingSettings) -> Case:
    """SQL for the state of a clip's vector, so pages show it without loading the vector."""
    return Case(
        When(current_embedding_q(config.model, config.dimensions), then=Value("current")),
        When(embedding_error__isnull=False, then=Value("failed")),
        When(embedding__isnull=False, then=Value("stale")),
        default=Value("none"),
        output_field=CharField(),
    )


class HasEmbeddingFilter(admin.SimpleListFilter):
    title = "has embedding"
    parameter_name = "has_embedding"

    def lookups(self, request, model_admin):
        return [("yes", "Yes: any vector"), ("no", "No vector")]

    def queryset(self, request, queryset):
        if self.value() in ("yes", "no"):
            return queryset.filter(embedding__isnull=self.value() == "no")
        return queryset


class StaleFilter(admin.SimpleListFilter):
    title = "stale embedding"
    parameter_name = "stale"

    def lookups(self, request, model_admin):
        return [("yes", "Yes: made from other text, model or size"), ("no", "No: current")]

    def queryset(self, request, queryset):
        config = embedding_settings()
        if self.value() == "yes":
            return queryset.filter(stale_q(config.model, config.dimensions))
        if self.value() == "no":
            return queryset.current(config.model, config.dimensions)
        return queryset


class FailedFilter(admin.SimpleListFilter):
    title = "failed"
    parameter_name = "failed"

    def lookups(self, request, model_admin):
        return [("yes", "Yes: last attempt failed"), ("no", "No")]

    def queryset(self, request, queryset):
        config = embedding_settings()
        if self.value() == "yes":
            return queryset.filter(failed_q(config.model, config.dimensions))
        if self.value() == "no":
            return queryset.exclude(failed_q(config.model, config.dimensions))
        return queryset


class EmbeddingModelFilter(admin.SimpleListFilter):
    """Models come from the run history and the settings: a DISTINCT over the clips would
    read the whole table on every page."""

    title = "embedding model"
    parameter_name = "embedding_model"
    NONE = "-"

    def lookups(self, request, model_admin):
        names = set(BackfillRun.objects.values_list("model", flat=True).distinct())
        names.add(embedding_settings().model)
        if self.value() and self.value() != self.NONE:
            names.add(self.value())
        return [(name, name) for name in sorted(names)] + [(self.NONE, "None")]

    def queryset(self, request, queryset):
        if self.value() == self.NONE:
            return queryset.filter(embedding_model__isnull=True)
        if self.value():
            return queryset.filter(embedding_model=self.value())
        return queryset


@admin.register(Clip)
class ClipAdmin(admin.ModelAdmin):
    list_display = (
        "id",
        "title",
        "broadcaster_name",
        "game_name",
        "created_at",
        "embedding_status",
        "embedding_model",
    )
    list_display_links = ("id", "title")
    list_filter = (
        HasEmbeddingFilter,
        StaleFilter,
        FailedFilter,
        EmbeddingModelFilter,
        "is_removed",
    )
    search_fields = ("title", "broadcaster_name", "creator_name", "=twitch_clip_id")
    # One COUNT(*) of the filtered list is enough; the full count is on the coverage page.
    # Facet counts would scan the table once per filter choice.
    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER
    exclude = ("embedding",)
    embedding_fields = (
        "embedding_status",
        "embedded_text",
        "text_hash",
        "embedding_model",
        "embedding_dimensions",
        "embedding_generated_at",
        "embedding_text_hash",
        "embedding_error",
        "embedding_attempts",
        "embedding_failed_at",
    )
    readonly_fields = (*embedding_fields, "similar_clips")
    fieldsets = (
        (
            None,
            {
                "fields": (
                    "twitch_clip_id",
                    "title",
                    "broadcaster_name",
                    "creator_name",
                    ("game_id", "game_name"),
                    "is_removed",
                    "created_at",
                )
            },
        ),
        ("Embedding", {"fields": embedding_fields}),
        ("Similar clips", {"fields": ("similar_clips",)}),
    )
    actions = ["embed_selected", "clear_embeddings"]
    # More than this many clips are queued as django-q2 tasks instead of holding the request.
    embed_now_limit = 200
    queue_chunk = 500

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        config = embedding_settings()
        return (
            super()
            .get_queryset(request)
            .defer("embedding")
            .annotate(embedding_state=embedding_state(config))
        )

    def get_urls(self):
        # Before the defaults: "<path:object_id>/" would take "coverage/" for a clip's id.
        coverage = path(
            "coverage/",
            self.admin_site.admin_view(self.coverage_view),
            name="embeddings_clip_coverage",
        )
        return [coverage, *super().get_urls()]

    @admin.display(description="Embedding", ordering="embedding_state")
    def embedding_status(self, clip: Clip) -> str:
        state = getattr(clip, "embedding_state", None)
        if state == "failed" and clip.embedding_error:
            return format_html('<span title="{}">failed</span>', clip.embedding_error)
        return "not embedded" if state == "none" else state or "-"

    @admin.display(description="Nearest live clips")
    def similar_clips(self, clip: Clip) -> str:
        """Neighbours by the stored vector: a page view never calls the embedding API."""
        neighbours = similar_clips(clip, k=10) if clip.pk else []
        if not neighbours:
            return "None: this clip has no current embedding, or no other clip has one."
        rows = format_html_join(
            "",
            '<li><a href="{}">{}</a> ({}) <span class="quiet">distance {}</span></li>',
            (
                (
                    reverse("admin:embeddings_clip_change", args=[n.pk]),
                    n.title,
                    n.broadcaster_name,
                    f"{n.distance:.3f}",
                )
                for n in neighbours
            ),
        )
        return format_html("<ol>{}</ol>", rows)

    @admin.display(description="Embedded text")
    def embedded_text(self, clip: Clip) -> str:
        return (
            Clip.objects.with_text().filter(pk=clip.pk).values_list("text", flat=True).first()
            or "-"
        )

    # --- actions -----------------------------------------------------------------------------

    @admin.action(description="Embed selected clips", permissions=["change"])
    def embed_selected(self, request: HttpRequest, queryset: QuerySet) -> None:
        config = embedding_settings()
        if not config.enabled:
            self.message_user(
                request, "EMBEDDING_ENABLED is false: nothing was embedded.", messages.WARNING
            )
            return
        selected = list(queryset.order_by("pk").values_list("pk", "is_removed"))
        ids = [pk for pk, removed in selected if not removed]
        if len(ids) < len(selected):
            self.message_user(
                request,
                f"{len(selected) - len(ids)} removed clips were left alone.",
                messages.INFO,
            )
        if not ids:
            return
        if len(ids) > self.embed_now_limit:
            self._enqueue(request, ids)
        else:
            self._embed_now(request, ids, config)

    def _enqueue(self, request: HttpRequest, ids: list[int]) -> None:
        try:
            group, tasks = enqueue_clip_ids(ids, chunk=self.queue_chunk)
        except Exception as err:  # the broker (Redis or the ORM queue) is unreachable
            self.message_user(request, f"Could not queue the clips: {err}", messages.ERROR)
            return
        self.message_user(
            request,
            f"Queued {len(ids)} clips as {tasks} django-q2 tasks in group {group}; "
            "a running qcluster embeds them, each task recorded as a backfill run.",
            messages.SUCCESS,
        )

    def _embed_now(self, request: HttpRequest, ids: list[int], config: EmbeddingSettings) -> None:
        try:
            service = build_embedding_service(config)
        except FatalProviderError as err:
            self.message_user(request, f"Nothing was embedded: {err}", messages.ERROR)
            return
        selection = Selection(
            model=config.model, dimensions=config.dimensions, force=True, ids=tuple(ids)
        )
        try:
            progress, run = execute_backfill(
                service, BackfillOptions(selection=selection), config, trigger="admin"
            )
        except DatabaseError as err:
            self.message_user(request, f"Database error, nothing lost: {err}", messages.ERROR)
            return
        finally:
            service.close()
        self._report(request, progress, run, len(ids))

    def _report(
        self, request: HttpRequest, progress: BackfillProgress, run: BackfillRun, wanted: int
    ) -> None:
        run_link = format_html(
            '<a href="{}">run #{}</a>',
            reverse("admin:embeddings_backfillrun_change", args=[run.pk]),
            run.pk,
        )
        if progress.fatal is not None:
            self.message_user(
                request,
                format_html(
                    "Embedding stopped ({}): {}. {} of {} clips were embedded first.",
                    run_link,
                    progress.fatal,
                    progress.processed,
                    wanted,
                ),
                messages.ERROR,
            )
            return
        self.message_user(
            request,
            format_html(
                "Embedded {} of {} clips ({}, {} tokens, ${}).",
                progress.processed,
                wanted,
                run_link,
                run.tokens,
                run.cost_usd,
            ),
            messages.SUCCESS if progress.processed else messages.WARNING,
        )
        if progress.failed or progress.skipped:
            reasons = "; ".join(f"{n} x {reason}" for reason, n in progress.reasons.most_common(3))
            self.message_user(
                request,
                f"{progress.failed} failed, {progress.skipped} skipped: {reasons}",
                messages.WARNING,
            )

    @admin.action(description="Clear embeddings of selected clips", permissions=["change"])
    def clear_embeddings(self, request: HttpRequest, queryset: QuerySet) -> None:
        if not embedding_settings().enabled:
            self.message_user(
                request, "EMBEDDING_ENABLED is false: nothing was cleared.", messages.WARNING
            )
            return
        cleared = queryset.filter(
            Q(embedding__isnull=False) | Q(embedding_model__isnull=False)
        ).update(
            embedding=None,
            embedding_model=None,
            embedding_generated_at=None,
            embedding_dimensions=None,
            embedding_text_hash=None,
        )
        self.message_user(
            request,
            f"Cleared the embeddings of {cleared} clips; the next run embeds them again.",
            messages.SUCCESS,
        )

    # --- coverage page -----------------------------------------------------------------------

    def coverage_view(self, request: HttpRequest) -> HttpResponse:
        # admin_view only checks that the user is active staff.
        if not self.has_view_permission(request):
            raise PermissionDenied
        config = embedding_settings()
        report = coverage_report(config.model, config.dimensions)
        context = {
            **self.admin_site.each_context(request),
            "title": "Embedding coverage",
            "opts": self.model._meta,
            "app_label": self.model._meta.app_label,
            "config": config,
            "api_key_set": bool(config.api_key),
            "report": report,
            "chart": coverage_chart(report.days),
            "runs": BackfillRun.objects.order_by("-started_at")[:LATEST_RUNS],
            "schedule": _schedule(),
            "can_view_runs": request.user.has_perm("embeddings.view_backfillrun"),
        }
        return TemplateResponse(request, "admin/embeddings/clip/coverage.html", context)


def _schedule():
    from django_q.models import Schedule

    return Schedule.objects.filter(name=SCHEDULE_NAME).order_by("pk").first()


# --- the chart, drawn on the server -----------------------------------------------------------


@admin.register(BackfillRun)
class BackfillRunAdmin(admin.ModelAdmin):
    """History only: runs are written by the pipeline, never by hand."""

    list_display = (
        "id",
        "status",
        "trigger",
        "started_at",
        "model",
        "processed",
        "failed",
        "skipped",
        "tokens",
        "cost_usd",
        "duration",
    )
    list_filter = ("status", "trigger", "model")
    date_hierarchy = "started_at"

    @admin.display(description="Duration", ordering="duration_seconds")
    def duration(self, run: BackfillRun) -> str:
        seconds = run.duration_seconds or 0
        if seconds < 60:
            return f"{seconds:.1f} s"
        minutes, seconds = divmod(round(seconds), 60)
        hours, minutes = divmod(minutes, 60)
        return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {seconds:02d} s"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False
