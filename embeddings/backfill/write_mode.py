"""How a run writes, chosen from the size of its work: every row written while an HNSW index
exists pays index maintenance (measured here: ~200 clips/s through it, ~2,000 without).

- live: through the index. Small runs, whose rows cost less than a build.
- rebuild: drop the index, write, build it once (CONCURRENTLY: clips can still be saved
  meanwhile). For a large run on a table whose index serves few vectors, a first fill above
  all: search scans the few there are exactly, and the index is back when the run ends,
  however it ends; a killed run's successor builds it.
- bulk: a large run over a table whose index serves many vectors. The served version is
  rewritten through its build rows (`embeddings.backfill.switch`), so search answers from a
  built index throughout: two index builds, but no row written through one.
"""

from dataclasses import dataclass
from enum import StrEnum

from embeddings.app_settings import EmbeddingSettings
from embeddings.backfill.claims import other_live_runs
from embeddings.backfill.index import hnsw_index_exists, owed_index_names
from embeddings.backfill.pipeline import BackfillOptions
from embeddings.models import Clip, EmbeddingVersion, served_version

BULK_SHARE = 0.2  # of the live clips: below it a run writes through the index


class WriteMode(StrEnum):
    LIVE = "live"
    REBUILD = "rebuild"
    BULK = "bulk"


@dataclass(frozen=True)
class WritePlan:
    mode: WriteMode
    why: str
    work: int | None = None  # the clips the run selects, where choosing had to count them


def choose_write_mode(
    options: BackfillOptions, config: EmbeddingSettings, *, rebuild_index: bool = False
) -> WritePlan:
    """The mode for this run of `config`'s served version; `rebuild_index`: the user's
    `--rebuild-index`."""
    if options.dry_run:
        return WritePlan(WriteMode.LIVE, "a dry run writes nothing")
    version = served_version()
    if version is not None and version.phase != EmbeddingVersion.Phase.DONE:
        return WritePlan(WriteMode.BULK, "resuming the large run left part-way")
    if config.source == "builds":
        return WritePlan(WriteMode.LIVE, "a switch is rewriting clips; vectors go to its rows")
    if rebuild_index:
        return WritePlan(WriteMode.REBUILD, "--rebuild-index")
    if not hnsw_index_exists():
        if owed_index_names():
            others = other_live_runs(None)
            if others:
                ids = ", ".join(f"#{other}" for other in others)
                why = f"another run ({ids}) took the HNSW index down; the last to end builds it"
                return WritePlan(WriteMode.REBUILD, why)
            return WritePlan(WriteMode.REBUILD, "a killed run left the HNSW index down")
        return WritePlan(WriteMode.LIVE, "no HNSW index to maintain")
    selection = options.selection
    work = selection.queryset().count()
    if options.limit is not None:
        work = min(work, options.limit)
    live = Clip.objects.live().count()
    if work < config.bulk_min_clips or work < BULK_SHARE * live:
        return WritePlan(WriteMode.LIVE, f"{work} clips of {live}: a small share", work)
    served = Clip.objects.live().current(config.model, config.dimensions).count()
    if served < config.bulk_min_clips:
        return WritePlan(WriteMode.REBUILD, f"{work} clips to write, {served} indexed", work)
    if options.limit is not None or selection.narrowed:
        return WritePlan(WriteMode.LIVE, "a narrowed run: bulk rewrites the whole table", work)
    return WritePlan(WriteMode.BULK, f"{work} clips to write, {served} indexed to keep serving")
