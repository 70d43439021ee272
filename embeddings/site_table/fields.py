"""Model fields for a site's keys and times, whatever types its backend chose."""

import uuid
from datetime import UTC, datetime

from django.db import models
from django.utils import timezone


def clip_key(value):
    """A clip's key as the database gives it: an int (bigint keys) or a UUID. Strings (admin
    URLs, task arguments, forms) are parsed: digits are an int, anything else a UUID."""
    if value is None or isinstance(value, int | uuid.UUID):
        return value
    text = str(value).strip()
    return int(text) if text.lstrip("-").isdigit() else uuid.UUID(text)


class ClipKeyField(models.BigAutoField):
    """The clips' primary key: a bigint identity on the tool's own table, the site's type (uuid,
    bigint) on an adopted one. Values pass through as the driver returns them; the database
    fills new keys from the column's own default either way."""

    def get_prep_value(self, value):
        value = models.Field.get_prep_value(self, value)
        return clip_key(value)

    def to_python(self, value):
        return clip_key(value)

    def get_db_prep_value(self, value, connection, prepared=False):
        return value if prepared else self.get_prep_value(value)


class ClipKeyRefField(models.BigIntegerField):
    """A column holding a clip's key in a tool table: bigint on the tool's own table, the
    site's key type on an adopted one (the adoption migration sets the column's type)."""

    def get_prep_value(self, value):
        return clip_key(models.Field.get_prep_value(self, value))

    def to_python(self, value):
        return clip_key(value)

    def get_db_prep_value(self, value, connection, prepared=False):
        return value if prepared else self.get_prep_value(value)

    def get_placeholder(self, value, compiler, connection) -> str:
        """A plain placeholder: Django 5.2's bulk insert otherwise sends each column as one
        array cast to its `db_type` (`%s::bigint[]`), which a site's uuid keys cannot be."""
        return "%s"


class SiteDateTimeField(models.DateTimeField):
    """A time column that may be `timestamp without time zone` on a site's table: the values
    it returns naive are UTC (the session's zone, which Django sets to UTC)."""

    def from_db_value(self, value, expression, connection):
        if isinstance(value, datetime) and timezone.is_naive(value):
            return value.replace(tzinfo=UTC)
        return value
