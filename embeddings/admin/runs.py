"""The history of backfill runs, read-only: runs are written by the pipeline, never by hand.

A run's page reads like the command's summary: its options as the flags they were, its
duration rounded, its cost "unknown" where the model has no list price."""

from django.contrib import admin
from django.http import HttpRequest
from django.utils import timezone
from django.utils.html import format_html, format_html_join

from embeddings.admin import wording
from embeddings.app_settings import PRICE_PER_MILLION_TOKENS
from embeddings.backfill.claims import settle_dead_runs
from embeddings.models import BackfillRun


@admin.register(BackfillRun)
class BackfillRunAdmin(admin.ModelAdmin):
    # One line a run at 1,400 px beside both sidebars (widths and cuts:
    # admin/embeddings/backfillrun/change_list.html); skipped clips and tokens are on its page.
    list_display = (
        "id",
        "status",
        "trigger",
        "started",
        "model_cell",
        "embedded",
        "failed_clips",
        "list_cost",
        "duration",
    )
    list_filter = ("status", "trigger", "model")
    date_hierarchy = "started_at"
    fieldsets = (
        (
            None,
            {
                "fields": (
                    "status",
                    "trigger",
                    "command_options",
                    "version",
                    "index_mode",
                    "started_at",
                    "finished_at",
                    "run_time",
                    "error",
                )
            },
        ),
        ("Clips", {"fields": ("total", "processed", "skipped", "failed", "cache_hits")}),
        ("API", {"fields": ("requests", "retries", "rate_limited", "tokens", "cost")}),
    )
    readonly_fields = ("command_options", "version", "run_time", "cost")

    @admin.display(description="Started", ordering="started_at")
    def started(self, run: BackfillRun) -> str:
        when = timezone.localtime(run.started_at)
        return format_html(
            '<span title="{}">{}</span>', f"{when:%Y-%m-%d %H:%M:%S %Z}", f"{when:%b %-d, %H:%M}"
        )

    @admin.display(description="Model", ordering="model")
    def model_cell(self, run: BackfillRun) -> str:
        label = f"{run.model} at {run.dimensions}"
        return format_html('<span title="{}">{}</span>', label, run.model)

    @admin.display(description="Embedded", ordering="processed")
    def embedded(self, run: BackfillRun) -> str:
        return f"{run.processed:,}"

    @admin.display(description="Failed", ordering="failed")
    def failed_clips(self, run: BackfillRun) -> str:
        return f"{run.failed:,}"

    @admin.display(description="Cost", ordering="cost_usd")
    def list_cost(self, run: BackfillRun) -> str:
        if PRICE_PER_MILLION_TOKENS.get(run.model) is None:
            return format_html('<span title="{}">unknown</span>', "no list price for this model")
        return f"${run.cost_usd:.4f}"

    @admin.display(description="Duration", ordering="duration_seconds")
    def duration(self, run: BackfillRun) -> str:
        return wording.duration(run.duration_seconds)

    @admin.display(description="Duration")
    def run_time(self, run: BackfillRun) -> str:
        text = wording.duration(run.duration_seconds)
        if run.done and run.duration_seconds:
            text += f" ({run.done / run.duration_seconds:,.0f} clips/s)"
        return text

    @admin.display(description="Cost", ordering="cost_usd")
    def cost(self, run: BackfillRun) -> str:
        batch_api = bool((run.options or {}).get("batch_api"))
        return wording.run_cost(run.model, run.cost_usd, batch_api=batch_api)

    @admin.display(description="Options")
    def command_options(self, run: BackfillRun) -> str:
        flags, notes = wording.option_flags(run.options)
        parts = []
        if flags:
            parts.append(format_html('<code class="run-flags">{}</code>', flags))
        parts.extend(format_html("<span>{}</span>", note) for note in notes)
        if not parts:
            return "none: the defaults"
        return format_html_join("; ", "{}", ((part,) for part in parts))

    @admin.display(description="Model")
    def version(self, run: BackfillRun) -> str:
        return f"{run.model} at {run.dimensions:,} dimensions"

    def get_queryset(self, request: HttpRequest):
        settle_dead_runs()  # a reader of the history never shows a dead run as running
        return super().get_queryset(request)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False
