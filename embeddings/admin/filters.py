"""The clip list's filters by embedding state; each is one indexed query, never a table scan of
vectors."""

from django.contrib import admin

from embeddings.models import BackfillRun, failed_q, served_settings


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
        config = served_settings()
        if self.value() == "yes":
            return queryset.stale(config.model, config.dimensions)
        if self.value() == "no":
            return queryset.current(config.model, config.dimensions)
        return queryset


class FailedFilter(admin.SimpleListFilter):
    title = "failed"
    parameter_name = "failed"

    def lookups(self, request, model_admin):
        return [("yes", "Yes: last attempt failed"), ("no", "No")]

    def queryset(self, request, queryset):
        config = served_settings()
        if self.value() == "yes":
            return queryset.failed(config.model, config.dimensions)
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
        names.add(served_settings().model)
        if self.value() and self.value() != self.NONE:
            names.add(self.value())
        return [(name, name) for name in sorted(names)] + [(self.NONE, "None")]

    def queryset(self, request, queryset):
        if self.value() == self.NONE:
            return queryset.filter(embedding_model__isnull=True)
        if self.value():
            return queryset.filter(embedding_model=self.value())
        return queryset
