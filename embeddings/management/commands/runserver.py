"""`manage.py runserver`: Django's (with static files), with the app's configuration errors.

Django's server first checks migrations, so a database that does not answer was a traceback
from its thread; here it is one line naming DATABASE_URL and exit 2, before the server starts.
"""

from django.contrib.staticfiles.management.commands import runserver

from embeddings.management.base import ConfigurationErrors


class Command(ConfigurationErrors, runserver.Command):
    def announces_unserved_settings(self, options: dict) -> bool:
        return False  # the coverage page names them, where someone looking at the server reads
