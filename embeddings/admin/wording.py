"""How the admin words numbers: counts with their noun in the right number, durations rounded
as a person reads them, costs that say "unknown" when nobody knows the price, and a run's
recorded options as the command flags they were."""

from decimal import Decimal

from embeddings.app_settings import PRICE_PER_MILLION_TOKENS


def counted(n: int, noun: str) -> str:
    """`1 clip`, `2 clips`, `1,200 clips`."""
    return f"{n:,} {noun if n == 1 else noun + 's'}"


def duration(seconds: float | None) -> str:
    """`68 ms`, `10.25 s`, `2 min 3 s`, `1 h 02 min`."""
    if seconds is None:
        return "-"
    seconds = max(float(seconds), 0.0)
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.2f} s"
    minutes, rest = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {rest} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def run_cost(model: str, cost_usd: Decimal | None, *, batch_api: bool = False) -> str:
    """A run's cost at list price, or "unknown" for a model without one (the run stores 0 then,
    as the command says "unknown for this model")."""
    if PRICE_PER_MILLION_TOKENS.get(model) is None:
        return "unknown for this model"
    text = f"${Decimal(cost_usd or 0):.6f}"
    return f"{text} (Batch API, half price)" if batch_api else text


def option_flags(options: dict | None) -> tuple[str, list[str]]:
    """A run's recorded options as `backfill_embeddings` flags (`--force --batch 50 --limit
    100`), and what no flag says (a queued task's id range, clips picked in the admin, live
    sync), in words.

    The record is `asdict(BackfillOptions)` (see `backfill.runs.jsonable_options`), with
    `batch_api` for Batch API jobs."""
    options = options or {}
    selection = options.get("selection") or {}
    flags, notes = [], []
    if options.get("batch_api"):
        flags.append("--batch-api")
    if selection.get("force"):
        flags.append("--force")
    if options.get("dry_run"):
        flags.append("--dry-run")
    if options.get("batch_size") is not None:
        flags.append(f"--batch {options['batch_size']}")
    if options.get("limit") is not None:
        flags.append(f"--limit {options['limit']}")
    if selection.get("created_after"):
        flags.append(f"--created-after {selection['created_after']}")
    low, high = selection.get("min_id"), selection.get("max_id")
    if low is not None and high is not None:
        notes.append(f"clips with ids {low} to {high} (a queued task's share)")
    elif low is not None or high is not None:
        notes.append(f"clips with ids from {low}" if high is None else f"clips with ids to {high}")
    if selection.get("ids") is not None:
        notes.append(f"{counted(selection['ids'], 'clip')} chosen in the admin")
    if selection.get("new_or_edited"):
        notes.append("new and edited clips only")
    follow = options.get("follow")
    if follow:
        notes.append(f"following saves, gathered {follow.get('gather_seconds', 0):g} s at a time")
    if selection.get("version_id") is not None:
        notes.append(f"vectors of version #{selection['version_id']} (a switch)")
    return " ".join(flags), notes
