"""The clip list's actions: a thin door into the pipeline the command and the tasks use
(`backfill.runs.execute_backfill`, or queued `tasks.embed_clip_ids`). Nothing here selects,
batches or writes vectors."""

from django.contrib import admin, messages
from django.db import DatabaseError
from django.db.models import Q, QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html

from embeddings.admin.wording import counted, run_cost
from embeddings.admin.workers import queued_message
from embeddings.app_settings import EmbeddingSettings, embedding_settings
from embeddings.backfill.pipeline import BackfillOptions, BackfillProgress
from embeddings.backfill.runs import execute_backfill
from embeddings.backfill.selection import Selection
from embeddings.exceptions import FatalProviderError
from embeddings.models import BackfillRun, served_settings
from embeddings.service.factory import build_embedding_service
from embeddings.tasks import enqueue_clip_ids


class EmbeddingActions:
    """Mixed into the clip admin: embed or clear the selected clips (needs "change clip")."""

    actions = ["embed_selected", "clear_embeddings"]
    # More than this many clips are queued as django-q2 tasks instead of holding the request.
    embed_now_limit = 200
    queue_chunk = 500

    def refused_while_disabled(
        self, request: HttpRequest, config: EmbeddingSettings, verb: str
    ) -> bool:
        if config.enabled:
            return False
        self.message_user(
            request, f"EMBEDDING_ENABLED is false: nothing was {verb}.", messages.WARNING
        )
        return True

    @admin.action(description="Embed selected clips", permissions=["change"])
    def embed_selected(self, request: HttpRequest, queryset: QuerySet) -> None:
        config = served_settings()
        if self.refused_while_disabled(request, config, "embedded"):
            return
        selected = list(queryset.order_by("pk").values_list("pk", "is_removed"))
        ids = [pk for pk, removed in selected if not removed]
        if len(ids) < len(selected):
            self.message_user(
                request,
                f"{counted(len(selected) - len(ids), 'removed clip')} "
                f"{'was' if len(selected) - len(ids) == 1 else 'were'} left alone.",
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
        text, taken = queued_message(counted(len(ids), "clip"), tasks, group)
        if taken:
            text += " Each task is recorded as a backfill run."
        self.message_user(request, text, messages.SUCCESS if taken else messages.WARNING)

    def _embed_now(self, request: HttpRequest, ids: list[int], config: EmbeddingSettings) -> None:
        try:
            service = build_embedding_service(config)
        except FatalProviderError as err:
            self.message_user(request, f"Nothing was embedded: {err}", messages.ERROR)
            return
        selection = Selection.of(config, force=True, ids=tuple(ids))
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
                    "Embedding stopped ({}): {}. {} of {} {} embedded first.",
                    run_link,
                    progress.fatal,
                    f"{progress.processed:,}",
                    counted(wanted, "clip"),
                    "was" if wanted == 1 else "were",
                ),
                messages.ERROR,
            )
            return
        self.message_user(
            request,
            format_html(
                "Embedded {} of {} ({}, {}, cost {}).",
                f"{progress.processed:,}",
                counted(wanted, "clip"),
                run_link,
                counted(run.tokens, "token"),
                run_cost(run.model, run.cost_usd),
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
        if self.refused_while_disabled(request, embedding_settings(), "cleared"):
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
            f"Cleared the {'embedding' if cleared == 1 else 'embeddings'} of "
            f"{counted(cleared, 'clip')}; the next run embeds "
            f"{'it' if cleared == 1 else 'them'} again.",
            messages.SUCCESS,
        )
