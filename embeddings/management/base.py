"""What every command of the app shares: errors become exit codes in one place.

A configuration error exits 2 with one line that names the setting to fix; a run that
stopped part-way exits 1 (`embeddings.exceptions.exit_code`). Configuration errors are:

- the project's own (`ConfigurationError`) and a setting the system checks refuse;
- a database that does not answer when the command connects, before it does anything (a
  connection lost later is the run's failure: exit 1), and one with no tables yet;
- `ImproperlyConfigured`, and a Redis server at REDIS_URL that does not answer.

`--traceback` shows the traceback of any of them, as Django does for its own errors. Every
command also says at its start, on stderr, when EMBEDDING_MODEL / _DIMENSIONS / _STORAGE are
set to other than the version the database serves (and the commands use).
"""

import redis
from django.conf import settings
from django.core import checks
from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import BaseCommand, CommandError, OutputWrapper, SystemCheckError
from django.db import DatabaseError, OperationalError, ProgrammingError, connection
from django_redis.exceptions import ConnectionInterrupted

from embeddings.app_settings import (
    embedding_settings,
    redact_secrets,
    redact_url,
    unserved_settings,
)
from embeddings.exceptions import ConfigurationError, EmbeddingError, exit_code
from embeddings.models import EmbeddingVersion

UNDEFINED_TABLE = "42P01"  # PostgreSQL's SQLSTATE for "relation does not exist"


class ConfigurationErrors:
    """The mapping above, for any command class (mixed in before Django's command class)."""

    # False for a command that never touches the database.
    requires_database = True
    # Whether a missing table means "run migrate" (not inside migrate itself).
    names_missing_tables = True

    def execute(self, *args, **options):
        try:
            if self.requires_database:
                _connect()
                if self.announces_unserved_settings(options):
                    _announce_unserved_settings(_stderr(self, options))
            return super().execute(*args, **options)
        except EmbeddingError as err:
            raise CommandError(_one_line(err), returncode=exit_code(err)) from err
        except ImproperlyConfigured as err:
            raise CommandError(_improperly_configured(err), returncode=2) from err
        except ProgrammingError as err:
            if not self.names_missing_tables or _sqlstate(err) != UNDEFINED_TABLE:
                raise
            table = _first_line(err).split(" does not exist")[0].removeprefix("relation ")
            raise CommandError(
                f"the database has no table {table} yet: run `manage.py migrate` to set it up "
                "(the database DATABASE_URL names, or the embedded PostgreSQL's when unset)",
                returncode=2,
            ) from err
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as err:
            raise CommandError(_redis_unreachable(err), returncode=2) from err
        except ConnectionInterrupted as err:
            raise CommandError(_redis_unreachable(err.__cause__ or err), returncode=2) from err

    def announces_unserved_settings(self, options: dict) -> bool:
        """Whether this command names settings the served version overrides (most do)."""
        return True

    def check(self, *args, **kwargs) -> None:
        try:
            super().check(*args, **kwargs)
        except SystemCheckError as err:
            raise SystemCheckError(_one_line_per_problem(err, kwargs), returncode=2) from None


class EmbeddingCommand(ConfigurationErrors, BaseCommand):
    pass


def _connect() -> None:
    """Connect now, so that a database that does not answer is said before any work."""
    try:
        connection.ensure_connection()
    except OperationalError as err:
        raise ConfigurationError(_database_unreachable(err)) from err


def _database_unreachable(err: DatabaseError) -> str:
    reason = _first_line(err).removeprefix("connection failed: ")
    url = getattr(settings, "DATABASE_URL", None)
    if getattr(settings, "USING_EMBEDDED_DATABASE", False):
        where = "the embedded PostgreSQL (DATABASE_URL is not set)"
        what_now = "run `make stop-db` and try again, or set DATABASE_URL to a server of yours"
    else:
        where = f"DATABASE_URL={redact_url(url)}" if url else "settings.DATABASES['default']"
        what_now = (
            "check its host, port (or socket), database name and credentials, and that the "
            "server is running; or unset DATABASE_URL to use the embedded PostgreSQL"
        )
    return f"cannot reach the database at {where}: {redact_secrets(reason)}; {what_now}"


def _redis_unreachable(err: BaseException) -> str:
    url = getattr(settings, "REDIS_URL", None) or "(unset)"
    return (
        f"cannot reach Redis at REDIS_URL={redact_url(url)}: "
        f"{redact_secrets(_first_line(err)).rstrip('.')}; "
        "start Redis there, fix REDIS_URL, or unset it to use the database queue and a disk cache"
    )


def _improperly_configured(err: ImproperlyConfigured) -> str:
    message = _first_line(err)
    if "settings.DATABASES" in message:
        return (
            f"DATABASE_URL is not a usable PostgreSQL URL ({message}): set it like "
            "postgresql://user:password@host:5432/dbname, or unset it to use the embedded "
            "PostgreSQL"
        )
    return message


def _announce_unserved_settings(stderr: OutputWrapper) -> None:
    """The line saying which settings the served version overrides, if any. Reads only: a
    database with no served version yet (or no tables) has nothing to say here."""
    try:
        served = EmbeddingVersion.objects.filter(state=EmbeddingVersion.State.SERVED).first()
    except ProgrammingError:
        return  # no tables yet: the command itself says to migrate
    if served is None:
        return
    config = served.settings(embedding_settings())
    unserved = unserved_settings(config)
    if unserved:
        stderr.write(unserved.line(config))


def _stderr(command: BaseCommand, options: dict) -> OutputWrapper:
    """Where the command's stderr goes (Django sets it up only inside `execute`)."""
    return OutputWrapper(options["stderr"]) if options.get("stderr") else command.stderr


def _sqlstate(err: DatabaseError) -> str | None:
    return getattr(err.__cause__, "sqlstate", None)


def _first_line(err: BaseException) -> str:
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return lines[0] if lines else type(err).__name__


def _one_line(err: BaseException) -> str:
    """The message as one line: a configuration error's explanation is never a wall of text."""
    return " ".join(line.strip() for line in str(err).splitlines() if line.strip())


def _one_line_per_problem(err: SystemCheckError, kwargs: dict) -> str:
    """Django's report of failed system checks, shortened to one line per problem when every
    problem is one of this app's settings (the same line `manage.py check` prints for it)."""
    found = checks.run_checks(
        app_configs=kwargs.get("app_configs"),
        tags=kwargs.get("tags"),
        include_deployment_checks=kwargs.get("include_deployment_checks", False),
        databases=kwargs.get("databases"),
    )
    serious = [
        message
        for message in found
        if message.level >= kwargs.get("fail_level", checks.ERROR) and not message.is_silenced()
    ]
    if serious and all(str(message.id).startswith("embeddings.") for message in serious):
        return "\n".join(str(message) for message in serious)
    return str(err)
