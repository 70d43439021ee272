"""The history of backfill runs, read-only: runs are written by the pipeline, never by hand."""

from django.contrib import admin
from django.http import HttpRequest

from embeddings.backfill.claims import settle_dead_runs
from embeddings.models import BackfillRun


@admin.register(BackfillRun)
class BackfillRunAdmin(admin.ModelAdmin):
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

    def get_queryset(self, request: HttpRequest):
        settle_dead_runs()  # a reader of the history never shows a dead run as running
        return super().get_queryset(request)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False
