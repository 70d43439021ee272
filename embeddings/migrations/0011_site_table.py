# A site's own `clips` (recorded by 0001) gets what the tool needs without a rewrite or a long
# lock; the tool's own table already has it. Not atomic: indexes are built CONCURRENTLY, and
# each ALTER TABLE commits at once, so a lock is never held longer than one statement.

import django.contrib.postgres.fields
import django.utils.timezone
from django.db import migrations, models

import embeddings.site_table.fields


def take_in(apps, schema_editor) -> None:
    from embeddings.app_settings import embedding_settings
    from embeddings.site_table.adoption import take_in

    config = embedding_settings()
    take_in(
        schema_editor,
        apps.get_model("embeddings", "Clip"),
        storage=config.storage,
        dimensions=config.dimensions,
    )


def give_back(apps, schema_editor) -> None:
    from embeddings.site_table.adoption import give_back

    give_back(schema_editor)


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("embeddings", "0010_site_indexes"),
    ]

    operations = [
        # State only: the columns are what they were (a bigint key on the tool's own table).
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name="clip",
                    name="created_at",
                    field=embeddings.site_table.fields.SiteDateTimeField(
                        default=django.utils.timezone.now
                    ),
                ),
                migrations.AlterField(
                    model_name="clip",
                    name="embedding_generated_at",
                    field=embeddings.site_table.fields.SiteDateTimeField(blank=True, null=True),
                ),
                migrations.AlterField(
                    model_name="clip",
                    name="id",
                    field=embeddings.site_table.fields.ClipKeyField(
                        primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                migrations.AlterField(
                    model_name="embeddingbatchclip",
                    name="clip_id",
                    field=embeddings.site_table.fields.ClipKeyRefField(),
                ),
                migrations.AlterField(
                    model_name="embeddingclaim",
                    name="clip_id",
                    field=embeddings.site_table.fields.ClipKeyRefField(
                        primary_key=True, serialize=False
                    ),
                ),
            ]
        ),
        # Unmanaged: its table is made by raw SQL (embeddings.site_table.adoption), before
        # Django's steps run on a site's database.
        migrations.CreateModel(
            name="SiteTable",
            fields=[
                ("table_name", models.TextField(primary_key=True, serialize=False)),
                ("key_type", models.TextField()),
                (
                    "added_columns",
                    django.contrib.postgres.fields.ArrayField(
                        base_field=models.TextField(), default=list, size=None
                    ),
                ),
                (
                    "added_indexes",
                    django.contrib.postgres.fields.ArrayField(
                        base_field=models.TextField(), default=list, size=None
                    ),
                ),
                ("adopted_at", models.DateTimeField(default=django.utils.timezone.now)),
                ("vectors_model", models.TextField(blank=True, null=True)),
                ("vectors_kept", models.BooleanField(null=True)),
                ("vectors_checked", models.IntegerField(default=0)),
                ("vectors_disagreed", models.IntegerField(default=0)),
            ],
            options={"db_table": "embedding_site_table", "managed": False},
        ),
        migrations.RunPython(take_in, give_back),
        # Indexes over clips.embedding taken down and owed back (embeddings/backfill/index.py).
        migrations.RunSQL(
            "CREATE TABLE embedding_owed_indexes"
            " (name text PRIMARY KEY, definition text NOT NULL, hnsw boolean NOT NULL)",
            "DROP TABLE embedding_owed_indexes",
        ),
    ]
