"""Building a version beside the served one and serving it, with search answering throughout.

Also how a large run of the served version writes (`backfill_embeddings` picks it): writes
through an HNSW index cost ~15x writes without one, and dropping the index leaves search
without it. Each step is resumable from the version's `phase`:

1. filling: the pipeline writes the version's vectors as build rows (binary COPY, no HNSW
   index to maintain); vectors `clips` already holds for it are copied in one statement.
   Passes repeat until no live clip lacks a row of its present text (clips created or edited
   meanwhile included).
2. indexed: an HNSW index over its rows, built CONCURRENTLY.
3. swapped: in one transaction under the serving lock, it becomes the served version,
   answered from its rows.
4. rewriting: `clips.embedding` becomes an empty column of its type (catalog only), is filled
   from the rows in chunks, and its indexes are built CONCURRENTLY.
5. done: in one transaction under the serving lock, rows written meanwhile are copied and
   search answers from `clips` again; the rows and their index are removed.
"""

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from django.db import OperationalError, connection, transaction
from django.db.models import Count, Q
from django.utils import timezone

from embeddings.app_settings import EmbeddingSettings, embedding_settings
from embeddings.backfill import sql
from embeddings.backfill.index import (
    build_hnsw_index,
    build_rows_index,
    drop_build_rows_index,
    owe_vector_indexes,
)
from embeddings.backfill.pipeline import Backfill, BackfillOptions, BackfillProgress
from embeddings.backfill.runs import execute_backfill
from embeddings.backfill.selection import Selection
from embeddings.backfill.write_mode import WriteMode
from embeddings.exceptions import ConfigurationError, RunAborted
from embeddings.models import BackfillRun, Clip, ClipVector, EmbeddingVersion, served_version
from embeddings.search.vector import HOLD_SERVING_EXCLUSIVE, SERVING_LOCK
from embeddings.service.factory import build_embedding_service

logger = logging.getLogger(__name__)

Phase, State = EmbeddingVersion.Phase, EmbeddingVersion.State
COPY_CHUNK = 5000  # clip ids per copying transaction
MAX_PASSES = 5  # fill passes before the swap; edits arriving faster are caught after it
LOCK_TIMEOUT = "2s"  # replacing the column waits at most this long for searches, then retries
LOCK_ATTEMPTS = 30


@dataclass
class SwitchOptions:
    batch_size: int = 50
    concurrency: int | None = None
    force: bool = False  # re-embed every live clip (no vector copied from clips)
    trigger: str = "switch"
    on_step: Callable[[str], None] = lambda step: None
    on_start: Callable[[Backfill], None] | None = None  # each pass's pipeline (to stop it)
    on_progress: Callable[[BackfillProgress], None] | None = None


@dataclass
class SwitchResult:
    version: EmbeddingVersion
    progress: BackfillProgress = field(default_factory=BackfillProgress)
    last_run: BackfillRun | None = None  # the record of its latest pass
    steps: list[tuple[str, float]] = field(default_factory=list)


def version_key(version: EmbeddingVersion) -> tuple[str, int, str]:
    return version.model, version.dimensions, version.storage


def unfinished_version() -> EmbeddingVersion | None:
    """The version a switch or a large run left part-way, if any."""
    return (
        EmbeddingVersion.objects.filter(
            Q(state=State.BUILDING) | (Q(state=State.SERVED) & ~Q(phase=Phase.DONE))
        )
        .order_by("state")
        .first()
    )


def version_status() -> dict:
    """Every version, served first, with how many build rows it has: `--status`."""
    built = dict(
        ClipVector.objects.order_by()
        .values("version")
        .annotate(rows=Count("pk"))
        .values_list("version", "rows")
    )
    order = {State.SERVED: 0, State.BUILDING: 1, State.RETIRED: 2}
    versions = sorted(EmbeddingVersion.objects.all(), key=lambda v: (order[v.state], v.pk))
    return {
        "live": Clip.objects.live().count(),
        "versions": [
            {
                "model": v.model,
                "dimensions": v.dimensions,
                "storage": v.storage,
                "state": v.state,
                "phase": v.phase,
                "built": built.get(v.pk, 0),
                "created_at": v.created_at,
                "served_at": v.served_at,
            }
            for v in versions
        ],
    }


def begin_switch(model: str, dimensions: int, storage: str) -> EmbeddingVersion | None:
    """The version to build for (model, dimensions, storage): resumed if it is part-way, made
    (or revived from an earlier serving) otherwise; None if it is served already."""
    served = served_version()
    if served is None:
        raise ConfigurationError(
            "no served version yet: clips.embedding is not of EMBEDDING_DIMENSIONS' size; set "
            "it to the column's size first (see `manage.py backfill_embeddings`' message)"
        )
    asked = (model, dimensions, storage)
    unfinished = unfinished_version()
    if unfinished is not None:
        if version_key(unfinished) == asked:
            return unfinished
        raise ConfigurationError(
            f"{unfinished} is part-way ({unfinished.phase}): finish it first with "
            f"`manage.py switch_embeddings --model {unfinished.model} --dimensions "
            f"{unfinished.dimensions} --storage {unfinished.storage}`"
        )
    if version_key(served) == asked:
        return None
    version, _ = EmbeddingVersion.objects.update_or_create(
        model=model,
        dimensions=dimensions,
        storage=storage,
        defaults={"state": State.BUILDING, "phase": Phase.FILLING, "created_at": timezone.now()},
    )
    return version


def rewrite_served(options: SwitchOptions) -> SwitchResult:
    """A large run of the served version (`write_mode`'s bulk): its vectors are rewritten
    through build rows, as a switch builds another version's, and resumed where one stopped."""
    served = served_version()
    if served.phase == Phase.DONE:
        served.phase = Phase.FILLING
        served.save(update_fields=["phase", "updated_at"])
    return Switch(served, options).run()


class Switch:
    """Takes `version` from its phase to done (see the module's steps)."""

    def __init__(self, version: EmbeddingVersion, options: SwitchOptions) -> None:
        self.version = version
        self.options = options
        self.result = SwitchResult(version)

    @property
    def config(self) -> EmbeddingSettings:
        return self.version.settings(embedding_settings())

    def run(self) -> SwitchResult:
        steps = {
            Phase.FILLING: self._fill,
            Phase.INDEXED: self._swap_in,
            Phase.SWAPPED: self._replace_column,
            Phase.REWRITING: self._rewrite_clips,
        }
        if self.version.phase == Phase.DONE:
            return self.result
        while self.version.phase != Phase.DONE:
            step = steps[self.version.phase]
            started = time.monotonic()
            self.options.on_step(self.version.phase)
            step()
            self.result.steps.append((step.__name__.strip("_"), time.monotonic() - started))
        # Clips saved between the last pass and the swap, if no live sync took them.
        self._pass(Selection(self.version.model, self.version.dimensions), WriteMode.LIVE)
        return self.result

    def _advance(self, phase: str, **fields) -> None:
        for name, value in fields.items():
            setattr(self.version, name, value)
        self.version.phase = phase
        self.version.save(update_fields=["phase", "updated_at", *fields])

    def _fill(self) -> None:
        version = self.version
        if not self.options.force:
            with connection.cursor() as cursor:
                cursor.execute(sql.SEED_BUILD_ROWS, [version.pk, version.model, version.dimensions])
        self._passes(force=self.options.force)
        build_rows_index(version.pk, version.storage, version.dimensions)
        self._passes(force=False)  # clips created or edited while the index was built
        self._advance(Phase.INDEXED)

    def _passes(self, *, force: bool) -> None:
        """Embed what lacks a build row until nothing does (or MAX_PASSES); `force`: every
        live clip once first."""
        selection = Selection(
            self.version.model, self.version.dimensions, version_id=self.version.pk, force=force
        )
        for _ in range(MAX_PASSES):
            progress = self._pass(selection, WriteMode.BULK)
            if progress.fatal is not None:
                raise progress.fatal
            if progress.exit_code:
                raise RunAborted(
                    f"{progress.failed} clips failed (or the run was interrupted): nothing is "
                    "served yet; re-run to resume"
                )
            if not progress.total:
                return
            # force embeds every clip once; later passes only what changed since
            selection = Selection(
                self.version.model, self.version.dimensions, version_id=self.version.pk
            )

    def _pass(self, selection: Selection, index_mode: WriteMode) -> BackfillProgress:
        config = self.config
        service = build_embedding_service(config, concurrency=self.options.concurrency)
        try:
            options = BackfillOptions(selection=selection, batch_size=self.options.batch_size)
            progress, self.result.last_run = execute_backfill(
                service,
                options,
                config,
                trigger=self.options.trigger,
                index_mode=index_mode,
                on_start=self.options.on_start,
                on_progress=self.options.on_progress,
            )
        finally:
            service.close()
        _add(self.result.progress, progress)
        return progress

    def _swap_in(self) -> None:
        """One transaction: it is served (from its rows) and the one served before retired."""
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(HOLD_SERVING_EXCLUSIVE, SERVING_LOCK)
            EmbeddingVersion.objects.filter(state=State.SERVED).exclude(pk=self.version.pk).update(
                state=State.RETIRED, phase=Phase.DONE
            )
            served_at = self.version.served_at if self.version.state == State.SERVED else None
            self._advance(Phase.SWAPPED, state=State.SERVED, served_at=served_at or timezone.now())

    def _replace_column(self) -> None:
        """An empty column of the version's type; brief, but it needs `clips` to itself, so it
        gives way to searches and tries again rather than queue them behind it."""
        version = self.version
        for attempt in range(LOCK_ATTEMPTS):
            try:
                with transaction.atomic(), connection.cursor() as cursor:
                    cursor.execute("SELECT set_config('lock_timeout', %s, true)", [LOCK_TIMEOUT])
                    owe_vector_indexes()  # the column's indexes go with it: each comes back
                    cursor.execute(sql.replace_vector_column(version.storage, version.dimensions))
                    self._advance(Phase.REWRITING)
                return
            except OperationalError as err:
                logger.info("replacing clips.embedding waited too long (%s), again", err)
                time.sleep(min(0.1 * 2**attempt, 2.0))
        raise RunAborted("clips stayed busy: could not replace clips.embedding; re-run to resume")

    def _rewrite_clips(self) -> None:
        version = self.version
        copy = sql.copy_from_builds(version.storage, version.dimensions)
        after, more = None, True
        with connection.cursor() as cursor:
            while more:
                cursor.execute(sql.NEXT_BUILD_CHUNK_END, [version.pk, after, COPY_CHUNK - 1])
                row = cursor.fetchone()
                upto, more = (row[0], True) if row else (None, False)
                cursor.execute(copy, self._copy_args(after, upto))
                after = upto
        build_hnsw_index(concurrently=True)
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(HOLD_SERVING_EXCLUSIVE, SERVING_LOCK)
            cursor.execute(copy, self._copy_args(None, None))  # rows written meanwhile
            self._advance(Phase.DONE)
        drop_build_rows_index(version.pk)
        with connection.cursor() as cursor:
            cursor.execute(sql.DELETE_BUILD_ROWS, [version.pk])

    def _copy_args(self, after, upto) -> list:
        v = self.version
        return [v.model, v.dimensions, v.pk, after, upto]


def _add(total: BackfillProgress, part: BackfillProgress) -> None:
    total.total += part.total
    total.processed += part.processed
    total.skipped += part.skipped
    total.failed += part.failed
    total.reasons.update(part.reasons)
    total.stats.add(part.stats)
