# The coverage page and /metrics read counts kept by statement triggers on clips instead of
# scanning the table (embeddings.coverage.ledger, docs/coverage-counts.md). On a site's table
# the triggers are the only DDL that locks clips, briefly (embeddings.site_table.locking); the
# base count is a plain read and the index is built CONCURRENTLY. Not atomic for that reason.

from django.db import migrations, models


def install(apps, schema_editor) -> None:
    from embeddings.coverage.ledger import install

    install(schema_editor.connection)


def remove(apps, schema_editor) -> None:
    from embeddings.coverage.ledger import remove

    remove(schema_editor.connection)


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("embeddings", "0012_embedding_batches_name"),
    ]

    operations = [
        migrations.CreateModel(
            name="CoverageBucket",
            fields=[
                ("facet", models.CharField(max_length=1, primary_key=True, serialize=False)),
                ("quarter", models.DateTimeField(null=True)),
                ("state", models.SmallIntegerField(null=True)),
                ("failed", models.BooleanField(null=True)),
                ("n", models.BigIntegerField()),
                ("is_removed", models.BooleanField()),
                ("embedding", models.BooleanField(null=True)),
                ("embedding_model", models.TextField(null=True)),
                ("embedding_dimensions", models.IntegerField(null=True)),
                ("text_hash", models.CharField(max_length=32)),
                ("embedding_text_hash", models.CharField(max_length=32, null=True)),
                ("embedding_generated_at", models.DateTimeField(null=True)),
                ("text_changed_at", models.DateTimeField()),
                ("embedding_error", models.TextField(null=True)),
            ],
            options={"db_table": "embedding_coverage_buckets", "managed": False},
        ),
        migrations.RunPython(install, remove),
    ]
