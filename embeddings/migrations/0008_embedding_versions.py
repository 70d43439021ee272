# Versions of the clips' vectors (see EmbeddingVersion) and the table a new one is built in.
# EMBEDDING_STORAGE=halfvec makes the column halfvec.

import django.db.models.deletion
import django.utils.timezone
import pgvector.django.vector
from django.db import migrations, models

from embeddings.site_table.operations import OnOwnTable


def halfvec_column(apps, schema_editor) -> None:
    """With EMBEDDING_STORAGE=halfvec the column and its HNSW index become half precision (a
    rewrite of the table, done once). The first version's row is made by the first process
    that asks for it (`embeddings.models.served_version`), from its settings."""
    from embeddings.app_settings import embedding_settings

    config = embedding_settings()
    with schema_editor.connection.cursor() as cursor:
        cursor.execute(
            "SELECT t.typname, a.atttypmod FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid"
            " WHERE a.attrelid = 'clips'::regclass AND a.attname = 'embedding'"
            " AND NOT a.attisdropped"
        )
        storage, dimensions = cursor.fetchone()
        if dimensions != config.dimensions:
            return  # the preflight says what to do
        if storage == "vector" and config.storage == "halfvec":
            cursor.execute("DROP INDEX IF EXISTS clips_embedding_hnsw")
            cursor.execute(
                f"ALTER TABLE clips ALTER COLUMN embedding TYPE halfvec({dimensions:d})"
                f" USING embedding::halfvec({dimensions:d})"
            )
            cursor.execute(
                "CREATE INDEX clips_embedding_hnsw ON clips USING hnsw (embedding halfvec_cosine_ops)"
                " WITH (m = 16, ef_construction = 64)"
            )


class Migration(migrations.Migration):
    dependencies = [
        ("embeddings", "0007_batch_api"),
    ]

    operations = [
        migrations.CreateModel(
            name="EmbeddingVersion",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("model", models.CharField(max_length=255)),
                ("dimensions", models.PositiveIntegerField()),
                ("storage", models.CharField(default="vector", max_length=16)),
                (
                    "state",
                    models.CharField(
                        choices=[
                            ("building", "Building"),
                            ("served", "Served"),
                            ("retired", "Retired"),
                        ],
                        default="building",
                        max_length=16,
                    ),
                ),
                (
                    "phase",
                    models.CharField(
                        choices=[
                            ("filling", "Filling"),
                            ("indexed", "Indexed"),
                            ("swapped", "Swapped"),
                            ("rewriting", "Rewriting"),
                            ("done", "Done"),
                        ],
                        default="filling",
                        max_length=16,
                    ),
                ),
                ("created_at", models.DateTimeField(default=django.utils.timezone.now)),
                ("served_at", models.DateTimeField(blank=True, null=True)),
                ("updated_at", models.DateTimeField(auto_now=True)),
            ],
            options={
                "db_table": "embedding_versions",
                "ordering": ["-created_at"],
                "constraints": [
                    models.UniqueConstraint(
                        fields=("model", "dimensions", "storage"), name="embedding_versions_unique"
                    ),
                    models.UniqueConstraint(
                        condition=models.Q(("state__in", ["served", "building"])),
                        fields=("state",),
                        name="embedding_versions_one_served_one_building",
                    ),
                ],
            },
        ),
        OnOwnTable(
            migrations.CreateModel(
                name="ClipVector",
                fields=[
                    (
                        "id",
                        models.BigAutoField(
                            auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                        ),
                    ),
                    ("embedding", pgvector.django.vector.VectorField()),
                    ("text_hash", models.CharField(max_length=32)),
                    ("generated_at", models.DateTimeField(default=django.utils.timezone.now)),
                    (
                        "clip",
                        models.ForeignKey(
                            on_delete=django.db.models.deletion.CASCADE,
                            related_name="built_vectors",
                            to="embeddings.clip",
                        ),
                    ),
                    (
                        "version",
                        models.ForeignKey(
                            db_index=False,
                            on_delete=django.db.models.deletion.CASCADE,
                            related_name="built_vectors",
                            to="embeddings.embeddingversion",
                        ),
                    ),
                ],
                options={
                    "db_table": "clip_vector_builds",
                    "constraints": [
                        models.UniqueConstraint(
                            fields=("version", "clip"), name="clip_vector_builds_unique"
                        )
                    ],
                },
            )
        ),
        OnOwnTable(migrations.RunPython(halfvec_column, migrations.RunPython.noop)),
        migrations.AddField(
            model_name="embeddingclaim",
            name="target",
            field=models.BigIntegerField(default=0),
        ),
        migrations.RunSQL(
            "ALTER TABLE embedding_claims DROP CONSTRAINT embedding_claims_pkey,"
            " ADD PRIMARY KEY (clip_id, target)",
            "ALTER TABLE embedding_claims DROP CONSTRAINT embedding_claims_pkey,"
            " ADD PRIMARY KEY (clip_id)",
        ),
    ]
