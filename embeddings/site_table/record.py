"""The record of a site's `clips` taken in by `migrate` (no row: the tool created `clips`).

The record table is made by raw SQL: the first migration needs it before any of Django's own
steps run, to tell them to leave the site's table alone. `SiteTable` reads it through the ORM.
"""

from dataclasses import dataclass

from django.contrib.postgres.fields import ArrayField
from django.core.management.base import CommandError
from django.db import models
from django.db.backends.base.base import BaseDatabaseWrapper
from django.utils import timezone
from psycopg import sql

from embeddings.site_table.catalog import (
    CLIPS,
    REQUIRED_COLUMNS,
    check_vector_column,
    column_type,
    fetchone,
    key_type,
)

RECORD_TABLE = "embedding_site_table"


class SiteTable(models.Model):
    """What adoption added to the site's table (so the way out removes just that), and what
    became of the site's own vectors: `vectors_kept` when a sample of those labelled with
    `vectors_model` agreed with the API (see `embeddings.backfill.site_vectors`). The table is
    made by raw SQL in `embeddings.site_table.adoption`, before Django's own steps run."""

    table_name = models.TextField(primary_key=True)
    key_type = models.TextField()
    added_columns = ArrayField(models.TextField(), default=list)
    added_indexes = ArrayField(models.TextField(), default=list)
    adopted_at = models.DateTimeField(default=timezone.now)
    vectors_model = models.TextField(null=True, blank=True)
    vectors_kept = models.BooleanField(null=True)
    vectors_checked = models.IntegerField(default=0)
    vectors_disagreed = models.IntegerField(default=0)

    class Meta:
        app_label = "embeddings"
        db_table = "embedding_site_table"
        managed = False

    def __str__(self) -> str:
        return f"{self.table_name} (a site's table, key {self.key_type})"


@dataclass(frozen=True)
class SiteTableRecord:
    key_type: str  # as format_type() spells it: uuid, bigint, integer
    added_columns: tuple[str, ...]
    added_indexes: tuple[str, ...]


def site_table(connection: BaseDatabaseWrapper) -> SiteTableRecord | None:
    """The record of an adopted `clips`; None when the tool created the table (or none yet)."""
    if fetchone(connection, "SELECT to_regclass(%s)", [RECORD_TABLE])[0] is None:
        return None
    row = fetchone(
        connection,
        sql.SQL("SELECT key_type, added_columns, added_indexes FROM {} WHERE table_name = %s")
        .format(sql.Identifier(RECORD_TABLE))
        .as_string(),
        [CLIPS],
    )
    return None if row is None else SiteTableRecord(row[0], tuple(row[1]), tuple(row[2]))


def create_record_table(connection: BaseDatabaseWrapper) -> None:
    """The table of `SiteTable` (unmanaged): made by the first migration when it finds a site's
    table, else by the adoption migration, empty."""
    with connection.cursor() as cursor:
        cursor.execute(
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} (table_name text PRIMARY KEY,"
                " key_type text NOT NULL,"
                " added_columns text[] NOT NULL DEFAULT '{{}}',"
                " added_indexes text[] NOT NULL DEFAULT '{{}}',"
                " adopted_at timestamptz NOT NULL DEFAULT now(),"
                " vectors_model text, vectors_kept boolean,"
                " vectors_checked integer NOT NULL DEFAULT 0,"
                " vectors_disagreed integer NOT NULL DEFAULT 0)"
            )
            .format(sql.Identifier(RECORD_TABLE))
            .as_string()
        )


def remember(connection: BaseDatabaseWrapper, storage: str, dimensions: int) -> None:
    """First step of the first migration: if `clips` exists already, it is the site's. Check
    that the tool can use it, and record it so the steps after it leave it alone."""
    if fetchone(connection, "SELECT to_regclass(%s)", [CLIPS])[0] is None:
        return
    check_vector_column(connection, storage, dimensions)
    absent = [name for name in REQUIRED_COLUMNS if column_type(connection, name) is None]
    if absent:
        raise CommandError(
            f"clips has no column {', '.join(absent)}: the tool embeds a clip's title,"
            " broadcaster, creator and game, and keeps to live (not removed) clips",
            returncode=2,
        )
    key = key_type(connection)
    create_record_table(connection)
    with connection.cursor() as cursor:
        cursor.execute(
            sql.SQL("INSERT INTO {} (table_name, key_type) VALUES (%s, %s)")
            .format(sql.Identifier(RECORD_TABLE))
            .as_string(),
            [CLIPS, key],
        )


def forget(connection: BaseDatabaseWrapper) -> None:
    with connection.cursor() as cursor:
        cursor.execute(
            sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(RECORD_TABLE)).as_string()
        )


def record_names(connection: BaseDatabaseWrapper, field: str, names: list[str]) -> None:
    with connection.cursor() as cursor:
        cursor.execute(
            sql.SQL("UPDATE {table} SET {field} = %s WHERE table_name = %s")
            .format(table=sql.Identifier(RECORD_TABLE), field=sql.Identifier(field))
            .as_string(),
            [names, CLIPS],
        )


_key_types: dict[str, str] = {}


def clip_key_type(connection: BaseDatabaseWrapper) -> str:
    """The SQL type of `clips.id` (bigint on the tool's own table), read once per database."""
    name = connection.settings_dict["NAME"]
    if name not in _key_types:
        record = site_table(connection)
        _key_types[name] = "bigint" if record is None else record.key_type
    return _key_types[name]
