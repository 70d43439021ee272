"""Backfills through OpenAI's Batch API: half price, a limit pool of its own, up to 24 hours.

The life of a clip here, one module per step: `queueing` claims the selection like a normal
run and holds it in `preparing` batches of up to 50,000 clips (a row per batch, a row per
clip); `submission` writes a batch's request file from the clips' present text, uploads it and
creates the remote batch while the enqueued tokens stay under `EMBEDDING_BATCH_QUEUE_TOKENS`;
`collection` checks and writes the answers of finished batches and moves what they left
undone to a new batch (up to `EMBEDDING_MAX_RETRIES` times); `jobs` ticks all of that, once
(the schedule) or until nothing is out (`--wait`), and records it as a BackfillRun.

Crash safety: every step's result is in the database before the next begins, and a batch
carries its row id in its metadata, so a process killed at any point is resumed by the next
tick without sending a clip twice.
"""
