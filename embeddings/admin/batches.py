"""Batch API jobs and their progress, read-only: batches are written by the backfill only."""

from django.contrib import admin

from embeddings.models import EmbeddingBatch


@admin.register(EmbeddingBatch)
class EmbeddingBatchAdmin(admin.ModelAdmin):
    list_display = (
        "id",
        "batch_id",
        "status",
        "progress",
        "clips",
        "requests",
        "tokens",
        "attempt",
        "resubmitted",
        "run",
        "created_at",
        "collected_at",
    )
    list_filter = ("status", "attempt", "model")
    search_fields = ("batch_id", "input_file_id")
    date_hierarchy = "created_at"

    @admin.display(description="Progress")
    def progress(self, batch: EmbeddingBatch) -> str:
        if batch.collected_at is None:
            return "queued" if batch.status == EmbeddingBatch.PREPARING else "out"
        return f"{batch.processed} written, {batch.failed} failed, {batch.skipped} skipped"

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False
