"""What every command of the app shares: errors become exit codes in one place.

A configuration error, including a setting the system checks refuse, exits 2; a run that
stopped part-way exits 1 (`embeddings.exceptions.exit_code`).
"""

from django.core.management.base import BaseCommand, CommandError, SystemCheckError

from embeddings.exceptions import EmbeddingError, exit_code


class EmbeddingCommand(BaseCommand):
    def check(self, *args, **kwargs) -> None:
        try:
            super().check(*args, **kwargs)
        except SystemCheckError as err:
            raise SystemCheckError(str(err), returncode=2) from None

    def execute(self, *args, **options):
        try:
            return super().execute(*args, **options)
        except EmbeddingError as err:
            raise CommandError(str(err), returncode=exit_code(err)) from None
