"""`manage.py migrate`: Django's own, with the app's configuration errors (`EmbeddingCommand`).

The first command a new user runs (`make demo`, `make serve`): a database that does not answer
is one line naming DATABASE_URL and exit 2, as for every command of the app, not a traceback.
"""

from django.core.management.commands import migrate

from embeddings.management.base import ConfigurationErrors


class Command(ConfigurationErrors, migrate.Command):
    # A missing table inside a migration is the migration's error, not "run migrate".
    names_missing_tables = False

    def announces_unserved_settings(self, options: dict) -> bool:
        return False  # migrate makes the first version from the settings; it overrides none
