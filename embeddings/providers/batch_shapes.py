"""The Batch API's limits and statuses, and the shapes of its batches and answer lines.

Apart from the client (`openai_batch`) because that pulls in the openai package: the admin,
the schedule's tasks and the estimate need these facts in every web process and worker, and
importing openai there cost each process half a second or more at start-up.
"""

from dataclasses import dataclass

import numpy as np

from embeddings.exceptions import ProviderError

ENDPOINT = "/v1/embeddings"
COMPLETION_WINDOW = "24h"
MAX_BATCH_INPUTS = 50_000  # inputs across all requests of one embeddings batch
MAX_FILE_REQUESTS = 50_000
MAX_FILE_BYTES = 200 * 1024 * 1024
# Statuses in which a batch still counts against the enqueued-token limit.
OPEN_STATUSES = frozenset({"validating", "in_progress", "finalizing", "cancelling"})
FINISHED_STATUSES = frozenset({"completed", "failed", "expired", "cancelled"})
METADATA_KEY = "clip_embeddings_batch"  # our row id, to find a batch a crash left unrecorded


@dataclass(frozen=True)
class RemoteBatch:
    id: str
    status: str
    input_file_id: str
    output_file_id: str | None
    error_file_id: str | None
    created_at: int
    metadata: dict[str, str]
    errors: str  # why a `failed` batch failed (validation), else ""

    @classmethod
    def of(cls, batch) -> "RemoteBatch":
        errors = batch.errors.data if batch.errors and batch.errors.data else []
        return cls(
            id=batch.id,
            status=batch.status,
            input_file_id=batch.input_file_id,
            output_file_id=batch.output_file_id,
            error_file_id=batch.error_file_id,
            created_at=batch.created_at,
            metadata=dict(batch.metadata or {}),
            errors="; ".join(f"{e.code}: {e.message}" for e in errors),
        )


@dataclass(frozen=True)
class LineAnswer:
    """One request line's outcome: vectors in input order, or why it has none."""

    custom_id: str
    vectors: np.ndarray | None
    tokens: int = 0
    error: ProviderError | None = None
