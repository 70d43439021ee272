"""Clips, the versions of their vectors, the record of each backfill run, and the Batch API
jobs out for clips."""

from dataclasses import replace
from datetime import timedelta

from django.contrib.postgres.indexes import GinIndex
from django.contrib.postgres.search import SearchVectorField
from django.db import IntegrityError, connection, models, transaction
from django.db.models.functions import Cast, Coalesce, Now
from django.utils import timezone
from pgvector.django import HalfVectorField, HnswIndex, VectorField

from embeddings import live_sync
from embeddings.app_settings import EmbeddingSettings, declared_dimensions, embedding_settings
from embeddings.clip_text import (
    BLANK_TEXT_HASH,
    clip_text_expression,
    clip_text_hash_expression,
)
from embeddings.search.hybrid import (
    Mode,
    find_clips,
    search_document_expression,
    stored_document,
)
from embeddings.site_table.fields import ClipKeyField, ClipKeyRefField, SiteDateTimeField
from embeddings.site_table.record import SiteTable

# The fields the embedded text is made of, and `is_removed` (a clip put back needs a vector).
TEXT_FIELDS = frozenset({"title", "broadcaster_name", "creator_name", "game_name", "is_removed"})
# A vector of other text than the clip's present one. Written once: the partial index below
# and `awaiting_vector()` must say it alike for PostgreSQL to answer through the index. A NULL
# `text_hash` (a site's row, its text unchanged since the table was taken in) is no edit: its
# vector, if the site made one, is a backfill's to judge (`backfill.site_vectors`).
EDITED_Q = models.Q(embedding__isnull=False, text_hash__isnull=False) & ~models.Q(
    embedding_text_hash=models.F("text_hash")
)
# Live sync and the sweep retry a clip that failed since its text last changed after this
# long, at most this many times; later, only a backfill run retries it (or a new edit).
RETRY_FAILED_AFTER = timedelta(minutes=15)
AUTOMATIC_ATTEMPTS = 5


# Live clips with nothing to embed (every text field blank): counted apart, never selected.
# `text_hash` is named not NULL: on a site's row not written since adoption it is NULL, and
# `exclude(text_hash=...)` on a column the model calls non-null would drop such rows too.
BLANK_Q = models.Q(text_hash__isnull=False, text_hash=BLANK_TEXT_HASH)


def text_hash_now() -> models.Expression:
    """The hash of the clip's present text. `text_hash` holds it, except on a site's rows not
    written since the tool took the table in (NULL there until their next write)."""
    return Coalesce(models.F("text_hash"), clip_text_hash_expression())


def site_vector_q(model: str) -> models.Q:
    """A vector the site made itself, labelled with `model`, from the clip's present text as
    far as can be told: its text unchanged since the table was taken in (`text_hash` still
    NULL), or the vector made after the text's last change."""
    return models.Q(
        embedding__isnull=False, embedding_text_hash__isnull=True, embedding_model=model
    ) & (
        models.Q(text_hash__isnull=True)
        | models.Q(embedding_generated_at__gte=models.F("text_changed_at"))
    )


def current_embedding_q(model: str, dimensions: int) -> models.Q:
    """Made from the clip's present text by this model at this size: by the tool, or by the
    site itself when a sample of the site's vectors agreed with the API (`SiteTable`)."""
    made_here = models.Q(
        embedding__isnull=False,
        embedding_text_hash=models.F("text_hash"),
        embedding_model=model,
        embedding_dimensions=dimensions,
    )
    agreed = SiteTable.objects.filter(vectors_model=model, vectors_kept=True)
    return made_here | (site_vector_q(model) & models.Exists(agreed))


def stale_q(model: str, dimensions: int) -> models.Q:
    """Holds a vector, but not one made from its present text by this model at this size."""
    return models.Q(embedding__isnull=False) & ~current_embedding_q(model, dimensions)


def failed_q(model: str, dimensions: int) -> models.Q:
    """The last attempt failed and no current vector came since (an older one may be kept)."""
    return models.Q(embedding_error__isnull=False) & ~current_embedding_q(model, dimensions)


def _build_row_of(version_id: int) -> models.Exists:
    """A build row of the clip's present text, as `text_hash_now` (aliased by the caller)
    gives it: a site's row not written since adoption has no `text_hash` yet, and its row
    would otherwise never count as built."""
    return models.Exists(
        ClipVector.objects.filter(
            version_id=version_id,
            clip_id=models.OuterRef("pk"),
            text_hash=models.OuterRef("text_hash_now"),
        )
    )


def vector_expression(config: EmbeddingSettings) -> models.Expression:
    """The clip's vector of that version, as its HNSW index is built over it (a build row's
    untyped vector cast to the version's type and size, which its expression index names)."""
    if config.source != "builds":
        return models.F("embedding")
    field = HalfVectorField if config.storage == "halfvec" else VectorField
    return Cast(models.F("built_vectors__embedding"), field(dimensions=config.dimensions))


def _resting() -> models.Q:
    """Failed since its text last changed, and either lately or too often."""
    failed_since_edit = models.Q(embedding_failed_at__gte=models.F("text_changed_at"))
    return failed_since_edit & (
        models.Q(embedding_failed_at__gt=timezone.now() - RETRY_FAILED_AFTER)
        | models.Q(embedding_attempts__gte=AUTOMATIC_ATTEMPTS)
    )


class ClipQuerySet(models.QuerySet):
    def live(self) -> "ClipQuerySet":
        return self.filter(is_removed=False)

    def with_text(self) -> "ClipQuerySet":
        """Annotate `text`, the exact text that is (or would be) embedded, and `text_hash_now`,
        its hash (see `text_hash_now`)."""
        return self.annotate(text=clip_text_expression(), text_hash_now=text_hash_now())

    def current(self, model: str, dimensions: int) -> "ClipQuerySet":
        """Clips whose stored vector was made from their present text by this model and size."""
        return self.filter(current_embedding_q(model, dimensions))

    def pending(self, model: str, dimensions: int) -> "ClipQuerySet":
        """Live clips that need a vector: none yet, or one made from other text, model or size
        (a clip with no text to embed needs none); and clips whose last attempt failed after
        their current vector was made (a `--force` run's failures, which the next plain run
        retries). The coverage counts do not use this: such a clip still counts as embedded."""
        failed_since = models.Q(embedding_failed_at__gt=models.F("embedding_generated_at"))
        needs = ~current_embedding_q(model, dimensions) | failed_since
        return self.live().filter(needs).exclude(BLANK_Q)

    def awaiting_vector(self) -> "ClipQuerySet":
        """Live clips new or edited since their vector: what live sync and the sweep embed
        (a model change is not here: that is a backfill's or a switch's to pay for). A clip
        that failed rests a while before it is tried again, so a poison input never loops."""
        awaiting = models.Q(embedding__isnull=True) | EDITED_Q
        return self.live().filter(awaiting).exclude(_resting()).exclude(BLANK_Q)

    def awaiting_vector_ids(self, *, after_id, limit: int) -> "ClipQuerySet":
        """The first `limit` ids of `awaiting_vector()` after `after_id` (None: from the
        first), as a query that the
        two small partial indexes answer (the OR above makes PostgreSQL scan the table: 96 ms
        at 200,000 clips, polled several times a second by live sync)."""
        never = self.filter(is_removed=False, embedding__isnull=True)
        edited = self.filter(models.Q(is_removed=False) & EDITED_Q)
        if after_id is not None:
            never, edited = never.filter(id__gt=after_id), edited.filter(id__gt=after_id)
        arms = [
            arm.exclude(_resting()).exclude(BLANK_Q).order_by("id").values("id")[:limit]
            for arm in (never, edited)
        ]
        return arms[0].union(arms[1], all=True).order_by("id")[:limit]

    def built(self, version_id: int) -> "ClipQuerySet":
        """Clips holding a build row of `version_id` made from their present text."""
        return self.alias(text_hash_now=text_hash_now()).filter(_build_row_of(version_id))

    def unbuilt(self, version_id: int) -> "ClipQuerySet":
        return self.alias(text_hash_now=text_hash_now()).exclude(_build_row_of(version_id))

    def searchable(self, config: EmbeddingSettings) -> "ClipQuerySet":
        """Live clips holding a current vector of the version `config` names, where that
        version keeps them (see `vector_expression`)."""
        if config.source == "builds":
            # One filter() call: the vector read by `vector_expression` comes from this join.
            return self.live().filter(
                built_vectors__version_id=config.version_id,
                built_vectors__text_hash=text_hash_now(),
            )
        return self.live().current(config.model, config.dimensions)

    def vector_expression(self, config: EmbeddingSettings) -> models.Expression:
        return vector_expression(config)

    def served_settings(self) -> EmbeddingSettings:
        """For `embeddings.search`, which never imports this module: see `served_settings`."""
        return served_settings()

    def stale(self, model: str, dimensions: int) -> "ClipQuerySet":
        return self.filter(stale_q(model, dimensions))

    def failed(self, model: str, dimensions: int) -> "ClipQuerySet":
        return self.filter(failed_q(model, dimensions))

    def with_state(self, model: str, dimensions: int) -> "ClipQuerySet":
        """Annotate `embedding_state` (current, failed, stale, none) without loading vectors."""
        return self.annotate(
            embedding_state=models.Case(
                models.When(current_embedding_q(model, dimensions), then=models.Value("current")),
                models.When(embedding_error__isnull=False, then=models.Value("failed")),
                models.When(embedding__isnull=False, then=models.Value("stale")),
                default=models.Value("none"),
                output_field=models.CharField(),
            )
        )

    def similar_to(
        self, text_or_clip, k: int = 10, *, mode: Mode = "vector", ef_search=None, service=None
    ) -> list:
        """The `k` live clips with a current vector nearest to a text or a clip, nearest first,
        each with `distance` (cosine). A list, not a queryset: the search runs at once, inside
        the transaction that carries its index settings. `mode="hybrid"` fuses full-text
        matches in, `mode="text"` uses them alone (`distance` None where no vector found the
        clip). See `embeddings.search`."""
        return find_clips(self, text_or_clip, k, mode=mode, ef_search=ef_search, service=service)

    # Writes that bypass Model.save(): live sync hears of them too.
    def bulk_create(self, objs, *args, **kwargs):
        created = super().bulk_create(objs, *args, **kwargs)
        live_sync.clips_changed(self.db)
        return created

    def bulk_update(self, objs, fields, *args, **kwargs):
        updated = super().bulk_update(objs, fields, *args, **kwargs)
        if TEXT_FIELDS.intersection(fields):
            live_sync.clips_changed(self.db)
        return updated

    def update(self, **kwargs):
        updated = super().update(**kwargs)
        if TEXT_FIELDS.intersection(kwargs):
            live_sync.clips_changed(self.db)
        return updated

    update.alters_data = True


class Clip(models.Model):
    # A bigint on the tool's own table; a site's table keeps its own key (uuid, bigint).
    id = ClipKeyField(primary_key=True, serialize=False, verbose_name="ID")
    twitch_clip_id = models.CharField(max_length=255, unique=True)
    title = models.TextField()
    broadcaster_name = models.CharField(max_length=255)
    creator_name = models.CharField(max_length=255)
    game_id = models.CharField(max_length=64, null=True, blank=True)
    game_name = models.CharField(max_length=255, null=True, blank=True)
    is_removed = models.BooleanField(default=False)
    created_at = SiteDateTimeField(default=timezone.now)
    # When the text last changed (a row's insert, or a trigger on its text columns, so raw SQL
    # counts too): how long a clip has waited for its vector, on the coverage page and /metrics.
    text_changed_at = models.DateTimeField(db_default=Now(), editable=False)

    # Hash of the text a vector would be made from now; compared with `embedding_text_hash`
    # (what the stored vector was made from) to find stale vectors inside PostgreSQL.
    text_hash = models.GeneratedField(
        expression=clip_text_hash_expression(),
        output_field=models.CharField(max_length=32),
        db_persist=True,
    )
    # The clip's words for full-text search (hybrid search): title, game, names, and each
    # handle whole. See `embeddings.search.hybrid`.
    search_document = models.GeneratedField(
        expression=search_document_expression(),
        output_field=SearchVectorField(),
        db_persist=True,
    )

    embedding = VectorField(dimensions=declared_dimensions(), null=True, blank=True)
    embedding_model = models.CharField(max_length=255, null=True, blank=True)
    embedding_generated_at = SiteDateTimeField(null=True, blank=True)
    embedding_dimensions = models.PositiveIntegerField(null=True, blank=True)
    embedding_text_hash = models.CharField(max_length=32, null=True, blank=True)

    # The last failure, kept until a later run succeeds; selection retries failed clips.
    embedding_error = models.TextField(null=True, blank=True)
    embedding_attempts = models.PositiveIntegerField(default=0)
    embedding_failed_at = models.DateTimeField(null=True, blank=True)

    objects = ClipQuerySet.as_manager()

    class Meta:
        db_table = "clips"
        ordering = ["id"]
        indexes = [
            HnswIndex(
                name="clips_embedding_hnsw",
                fields=["embedding"],
                m=16,
                ef_construction=64,
                opclasses=["vector_cosine_ops"],
            ),
            models.Index(fields=["created_at"], name="clips_created_at_idx"),
            GinIndex(stored_document(), name="clips_search_document_gin"),
            # Keyset batches of never-embedded live clips walk this small partial index.
            models.Index(
                fields=["id"],
                name="clips_unembedded_idx",
                condition=models.Q(is_removed=False, embedding__isnull=True),
            ),
            # Live sync's poll: edited clips are few (see EDITED_Q).
            models.Index(
                fields=["id"],
                name="clips_edited_idx",
                condition=models.Q(is_removed=False) & EDITED_Q,
            ),
            # Failed clips are few: the coverage page's failure reasons and the admin's
            # "failed" filter read them through this index instead of the whole table.
            models.Index(
                fields=["id"],
                name="clips_failed_idx",
                condition=models.Q(embedding_error__isnull=False),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.title} ({self.broadcaster_name})"

    def save(self, *args, **kwargs) -> None:
        super().save(*args, **kwargs)
        fields = kwargs.get("update_fields")
        if fields is None or TEXT_FIELDS.intersection(fields):
            live_sync.clips_changed(kwargs.get("using") or self._state.db)


class BackfillRun(models.Model):
    """One run of the pipeline, from any door (command, schedule, task, admin)."""

    class Status(models.TextChoices):
        RUNNING = "running"
        SUCCEEDED = "succeeded"
        FAILED = "failed"
        INTERRUPTED = "interrupted"

    trigger = models.CharField(max_length=32, default="command")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.RUNNING)
    options = models.JSONField(default=dict)
    started_at = models.DateTimeField(default=timezone.now)
    # Counts are saved every few seconds while a run goes: a run that dies keeps them.
    updated_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    model = models.CharField(max_length=255)
    dimensions = models.PositiveIntegerField()
    total = models.PositiveIntegerField(default=0)
    processed = models.PositiveIntegerField(default=0)
    skipped = models.PositiveIntegerField(default=0)
    failed = models.PositiveIntegerField(default=0)
    cache_hits = models.PositiveIntegerField(default=0)
    requests = models.PositiveIntegerField(default=0)
    retries = models.PositiveIntegerField(default=0)
    rate_limited = models.PositiveIntegerField(default=0)
    tokens = models.PositiveBigIntegerField(default=0)
    cost_usd = models.DecimalField(max_digits=12, decimal_places=6, default=0)
    duration_seconds = models.FloatField(default=0)
    index_mode = models.CharField(max_length=16, default="live")
    error = models.TextField(blank=True, default="")

    class Meta:
        ordering = ["-started_at"]

    def __str__(self) -> str:
        return f"Backfill #{self.pk} ({self.status})"

    @property
    def done(self) -> int:
        return self.processed + self.skipped + self.failed

    @property
    def rate(self) -> float | None:
        """Clips per second so far, as of the last saved count."""
        seconds = ((self.updated_at or self.started_at) - self.started_at).total_seconds()
        return self.done / seconds if seconds > 0 and self.done else None

    @property
    def eta_seconds(self) -> float | None:
        rate = self.rate
        return max(0.0, (self.total - self.done) / rate) if rate else None


class EmbeddingClaim(models.Model):
    """A clip some live run is embedding right now, so no other run requests it too.

    A claim counts only while its run holds its advisory lock (see `embeddings.backfill.claims`):
    a run killed at any moment frees its clips at once, with nothing to expire. The table is
    UNLOGGED (claims mean nothing after a database crash) and rows never touch `clips`, so
    claiming costs no HNSW index maintenance and never blocks a user editing a clip.
    """

    clip_id = ClipKeyRefField(primary_key=True)
    # What the vector is for: 0 the served vectors in `clips`, else a version's build rows, so
    # a switch's run and live sync never wait on each other. The table's primary key is
    # (clip_id, target) (migration 0007); the ORM only ever reads claims.
    target = models.BigIntegerField(default=0)
    run_id = models.IntegerField()
    claimed_at = models.DateTimeField(default=timezone.now)

    class Meta:
        db_table = "embedding_claims"

    def __str__(self) -> str:
        return f"clip {self.clip_id} held by run {self.run_id}"


class EmbeddingBatch(models.Model):
    """One OpenAI Batch API job for up to 50,000 clips, from its request file to its answers.

    A row exists before its remote batch does (`preparing`), so a process killed between the
    upload and the create finds its batch again by the metadata it carries (see
    `embeddings.backfill.batch_api`). It is open until `collected_at`: its answers are written
    and what it left undone moved on to a new row (`attempt` + 1) or recorded as failed.
    """

    PREPARING = "preparing"  # no remote batch yet; else the API's own status

    run = models.ForeignKey(
        BackfillRun, null=True, blank=True, on_delete=models.SET_NULL, related_name="batches"
    )
    status = models.CharField(max_length=16, default=PREPARING)
    batch_id = models.CharField(max_length=64, null=True, blank=True, unique=True)
    input_file_id = models.CharField(max_length=64, null=True, blank=True)
    output_file_id = models.CharField(max_length=64, null=True, blank=True)
    error_file_id = models.CharField(max_length=64, null=True, blank=True)
    model = models.CharField(max_length=255)
    dimensions = models.PositiveIntegerField()
    attempt = models.PositiveIntegerField(default=1)
    clips = models.PositiveIntegerField(default=0)
    requests = models.PositiveIntegerField(default=0)
    tokens = models.PositiveBigIntegerField(default=0)  # estimated when queued, counted on upload
    processed = models.PositiveIntegerField(default=0)
    skipped = models.PositiveIntegerField(default=0)
    failed = models.PositiveIntegerField(default=0)
    resubmitted = models.PositiveIntegerField(default=0)
    error = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(default=timezone.now)
    submitted_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    collected_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name_plural = "embedding batches"
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(
                fields=["id"],
                name="batches_open_idx",
                condition=models.Q(collected_at__isnull=True),
            )
        ]

    def __str__(self) -> str:
        return f"Batch #{self.pk} ({self.status}, {self.clips} clips)"


class EmbeddingBatchClip(models.Model):
    """A clip held by an open batch, with the hash of the text it was sent with.

    Selection skips a clip while a row holds its present text (so no run or live sync pays
    for it online meanwhile); an edit frees it at once, and the batch's answer for the old
    text is then refused by the writer's hash check. Rows go when their batch is collected.
    """

    batch = models.ForeignKey(EmbeddingBatch, on_delete=models.CASCADE, related_name="items")
    clip_id = ClipKeyRefField()
    text_hash = models.CharField(max_length=32)

    class Meta:
        db_table = "embedding_batch_clips"
        indexes = [
            models.Index(fields=["clip_id", "text_hash"], name="batch_clips_held_idx"),
            models.Index(fields=["batch", "clip_id"], name="batch_clips_batch_idx"),
        ]

    def __str__(self) -> str:
        return f"clip {self.clip_id} in batch {self.batch_id}"


class EmbeddingVersion(models.Model):
    """One (model, size, storage) of the clips' vectors: the one every search serves, the one a
    switch builds beside it, or one served before (kept: switching back finds its row).

    Every process reads the served version from here at query time (`served_settings`), so a
    web server started with other EMBEDDING_* settings follows a switch at once. The phase
    says how far a switch (or a large rewrite of the served version) has come, so re-running
    `switch_embeddings` resumes it.
    """

    class State(models.TextChoices):
        BUILDING = "building"
        SERVED = "served"
        RETIRED = "retired"

    class Phase(models.TextChoices):
        FILLING = "filling"  # its vectors are being written to clip_vector_builds
        INDEXED = "indexed"  # complete there, with an HNSW index of its own
        SWAPPED = "swapped"  # served from its build rows; clips.embedding not replaced yet
        REWRITING = "rewriting"  # served from its build rows while clips.embedding is refilled
        DONE = "done"  # clips.embedding holds it

    model = models.CharField(max_length=255)
    dimensions = models.PositiveIntegerField()
    storage = models.CharField(max_length=16, default="vector")
    state = models.CharField(max_length=16, choices=State.choices, default=State.BUILDING)
    phase = models.CharField(max_length=16, choices=Phase.choices, default=Phase.FILLING)
    created_at = models.DateTimeField(default=timezone.now)
    served_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        db_table = "embedding_versions"
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["model", "dimensions", "storage"], name="embedding_versions_unique"
            ),
            models.UniqueConstraint(
                fields=["state"],
                condition=models.Q(state__in=["served", "building"]),
                name="embedding_versions_one_served_one_building",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.model} at {self.dimensions} ({self.storage}, {self.state})"

    @property
    def source(self) -> str:
        return "builds" if self.phase in (self.Phase.SWAPPED, self.Phase.REWRITING) else "clips"

    def settings(self, base: EmbeddingSettings) -> EmbeddingSettings:
        """`base` (the process's settings) with this version's model, size and storage."""
        return replace(
            base,
            model=self.model,
            dimensions=self.dimensions,
            storage=self.storage,
            version_id=self.pk,
            source=self.source,
        )


class ClipVector(models.Model):
    """A clip's vector of a version being built beside the served one (or of a large rewrite
    of the served one). A table of its own, not a second column of `clips`: a non-HOT UPDATE
    of a clip adds an entry to every index of `clips`, its HNSW index included, even when the
    indexed column did not change. No HNSW index while it fills: rows arrive by binary COPY."""

    version = models.ForeignKey(
        EmbeddingVersion, on_delete=models.CASCADE, related_name="built_vectors", db_index=False
    )
    clip = models.ForeignKey(Clip, on_delete=models.CASCADE, related_name="built_vectors")
    embedding = VectorField()  # untyped: any size; the version's index casts it
    text_hash = models.CharField(max_length=32)
    generated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        db_table = "clip_vector_builds"
        constraints = [
            models.UniqueConstraint(fields=["version", "clip"], name="clip_vector_builds_unique")
        ]

    def __str__(self) -> str:
        return f"clip {self.clip_id} of version {self.version_id}"


def embedding_column_type() -> tuple[str, int] | None:
    """(storage, dimensions) of `clips.embedding` in the database; None: no such column."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT t.typname, a.atttypmod FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid"
            " WHERE a.attrelid = to_regclass(%s) AND a.attname = 'embedding'"
            " AND NOT a.attisdropped",
            [Clip._meta.db_table],
        )
        row = cursor.fetchone()
    return (row[0], row[1]) if row else None


def served_version() -> EmbeddingVersion | None:
    """The version search serves; the first one is made from the settings, if the clips
    column is of their type and size (else the preflight says what to do)."""
    served = EmbeddingVersion.objects.filter(state=EmbeddingVersion.State.SERVED).first()
    if served is not None:
        return served
    config = embedding_settings()
    if embedding_column_type() != (config.storage, config.dimensions):
        return None
    try:
        with transaction.atomic():
            return EmbeddingVersion.objects.create(
                model=config.model,
                dimensions=config.dimensions,
                storage=config.storage,
                state=EmbeddingVersion.State.SERVED,
                phase=EmbeddingVersion.Phase.DONE,
                served_at=timezone.now(),
            )
    except IntegrityError:  # another process made it first
        return EmbeddingVersion.objects.filter(state=EmbeddingVersion.State.SERVED).first()


def adopt_column(model: str) -> EmbeddingVersion:
    """The served version, made from the column as it is when the settings name another size
    (so a switch can start from it: `resize_embeddings`)."""
    served = served_version()
    if served is not None:
        return served
    storage, dimensions = embedding_column_type()
    return EmbeddingVersion.objects.create(
        model=model,
        dimensions=dimensions,
        storage=storage,
        state=EmbeddingVersion.State.SERVED,
        phase=EmbeddingVersion.Phase.DONE,
        served_at=timezone.now(),
    )


def served_settings() -> EmbeddingSettings:
    """The settings of this process with the served version's model, size and storage: what
    every search, run, page and metric uses. EMBEDDING_MODEL / _DIMENSIONS / _STORAGE only
    name the first version."""
    config = embedding_settings()
    version = served_version()
    return config if version is None else version.settings(config)
