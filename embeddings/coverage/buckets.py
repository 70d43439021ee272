"""The kept counts as rows Django can filter with the clips' own Q expressions."""

from django.db import models

from embeddings.coverage.triggers import VIEW


class CoverageBucket(models.Model):
    """One bucket of clips and how many there are (`n`), through a view of the totals and
    the unfolded deltas. The fields named as `Clip`'s hold canonical values that answer
    every comparison of `embeddings.models` (`current_embedding_q`, `failed_q`, `BLANK_Q`)
    as the bucket's clips do, and are as nullable as `Clip`'s, so Django writes the same
    SQL for both (its NOT adds IS NOT NULL tests by the fields' nullability)."""

    # s: every clip; m: by vector made; c: by created. Not unique: only aggregates are read,
    # never a bucket as an object, and Django wants a primary key.
    facet = models.CharField(max_length=1, primary_key=True)
    quarter = models.DateTimeField(null=True)  # the quarter hour of `m` and `c`
    state = models.SmallIntegerField(null=True)
    failed = models.BooleanField(null=True)
    n = models.BigIntegerField()
    is_removed = models.BooleanField()
    embedding = models.BooleanField(null=True)  # true: holds a vector
    embedding_model = models.TextField(null=True)
    embedding_dimensions = models.IntegerField(null=True)
    text_hash = models.CharField(max_length=32)
    embedding_text_hash = models.CharField(max_length=32, null=True)
    embedding_generated_at = models.DateTimeField(null=True)
    text_changed_at = models.DateTimeField()
    embedding_error = models.TextField(null=True)

    class Meta:
        app_label = "embeddings"
        db_table = VIEW
        managed = False

    def __str__(self) -> str:
        return f"{self.n} clips in bucket {self.facet}/{self.state}"
