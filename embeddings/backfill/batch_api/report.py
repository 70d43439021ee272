"""How a Batch API job shows itself after the summary: the batches its run submitted."""

from embeddings.models import BackfillRun


def batch_lines(run: BackfillRun) -> list[str]:
    batches = list(run.batches.order_by("id"))
    if not batches:
        return ["Batches: none submitted by this run"]
    lines = [f"Batches: {len(batches)} ({sum(b.clips for b in batches)} clips)"]
    for batch in batches:
        state = "collected" if batch.collected_at else batch.status
        lines.append(
            f"  #{batch.pk} {batch.batch_id or '-'}: {state}, {batch.clips} clips, "
            f"{batch.requests} requests, attempt {batch.attempt}"
        )
    return lines
