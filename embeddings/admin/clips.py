"""The clip admin: clips with their embedding state, their nearest clips, the coverage page.

Vectors are never loaded into list or form pages: they are large, and only their state
(current, stale, failed, none) means anything to a person.
"""

from functools import partial

from django.contrib import admin, messages
from django.db import connection
from django.db.models import QuerySet
from django.http import HttpRequest
from django.shortcuts import redirect
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join

from embeddings.admin.actions import EmbeddingActions
from embeddings.admin.coverage_page import coverage_view, embed_pending_view
from embeddings.admin.filters import (
    EmbeddingModelFilter,
    FailedFilter,
    HasEmbeddingFilter,
    StaleFilter,
)
from embeddings.models import Clip, served_settings
from embeddings.search.vector import similar_clips
from embeddings.site_table.catalog import refuse_new_clips


@admin.register(Clip)
class ClipAdmin(EmbeddingActions, admin.ModelAdmin):
    # Readable at 1,400 px beside the sidebars: one line a clip, long cells cut with an ellipsis
    # and whole in their tooltip, the model and the time in the Embedding and Created tooltips
    # (widths: admin/embeddings/clip/change_list.html). The model has its filter on the right.
    list_display = (
        "clip_id",
        "clip_title",
        "broadcaster",
        "game",
        "created",
        "embedding_status",
    )
    list_display_links = ("clip_id", "clip_title")
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

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        config = served_settings()
        queryset = super().get_queryset(request).defer("embedding")
        return queryset.with_state(config.model, config.dimensions)

    def add_view(self, request: HttpRequest, form_url: str = "", extra_context=None):
        """On a site's table whose new rows need columns only the site fills, say so instead of
        offering a form whose save would fail."""
        known = {field.column for field in Clip._meta.concrete_fields}
        refusal = refuse_new_clips(connection, known)
        if refusal:
            messages.error(request, f"Clips cannot be added here: {refusal}.")
            return redirect("admin:embeddings_clip_changelist")
        return super().add_view(request, form_url, extra_context)

    def get_urls(self):
        # Before the defaults: "<path:object_id>/" would take "coverage/" for a clip's id.
        view = self.admin_site.admin_view
        pages = [
            path("coverage/", view(partial(coverage_view, self)), name="embeddings_clip_coverage"),
            path(
                "coverage/embed-pending/",
                view(partial(embed_pending_view, self)),
                name="embeddings_clip_embed_pending",
            ),
        ]
        return [*pages, *super().get_urls()]

    @admin.display(description="ID", ordering="id")
    def clip_id(self, clip: Clip) -> str:
        return _cut(str(clip.pk))  # a site's UUID key is cut to its start

    @admin.display(description="Title", ordering="title")
    def clip_title(self, clip: Clip) -> str:
        return _cut(clip.title)

    @admin.display(description="Broadcaster", ordering="broadcaster_name")
    def broadcaster(self, clip: Clip) -> str:
        return _cut(clip.broadcaster_name)

    @admin.display(description="Game", ordering="game_name")
    def game(self, clip: Clip) -> str:
        return _cut(clip.game_name)

    @admin.display(description="Created", ordering="created_at")
    def created(self, clip: Clip) -> str:
        if clip.created_at is None:
            return "-"
        when = timezone.localtime(clip.created_at)
        return format_html(
            '<span title="{}">{}</span>', when.strftime("%Y-%m-%d %H:%M %Z"), f"{when:%Y-%m-%d}"
        )

    @admin.display(description="Embedding", ordering="embedding_state")
    def embedding_status(self, clip: Clip) -> str:
        state = getattr(clip, "embedding_state", None)
        if state == "failed" and clip.embedding_error:
            return format_html('<span title="{}">failed</span>', clip.embedding_error)
        if state in (None, "none"):
            return "not embedded" if state else "-"
        made = f"{clip.embedding_model} at {clip.embedding_dimensions} dimensions"
        if clip.embedding_generated_at is not None:
            made += f", {timezone.localtime(clip.embedding_generated_at):%Y-%m-%d %H:%M %Z}"
        return format_html('<span title="{}">{}</span>', made, state)

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


def _cut(text: str | None) -> str:
    """A cell the list cuts to its column with an ellipsis: whole in its tooltip."""
    if not text:
        return "-"
    return format_html('<span class="cut" title="{}">{}</span>', text, text)
