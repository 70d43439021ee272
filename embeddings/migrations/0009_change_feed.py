# Live sync hears every writer: a statement trigger on clips notifies the channel that the
# django-q2 workers listen to (embeddings.live_sync). On a site's busy table each statement
# waits at most a moment for its lock, and is retried (embeddings.site_table.locking).

from django.db import migrations

from embeddings.live_sync import change_feed_sql, drop_change_feed_sql
from embeddings.site_table.locking import execute_briefly


def install(apps, schema_editor) -> None:
    for statement in change_feed_sql():
        execute_briefly(schema_editor.connection, statement)


def remove(apps, schema_editor) -> None:
    for statement in drop_change_feed_sql():
        execute_briefly(schema_editor.connection, statement)


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("embeddings", "0008_embedding_versions"),
    ]

    operations = [
        migrations.RunPython(install, remove),
    ]
