"""`manage.py ensure_superuser`: create or update the admin user from Django's own variables.

`createsuperuser --noinput` reads `DJANGO_SUPERUSER_USERNAME` / `_PASSWORD` / `_EMAIL` but fails
when the user exists and never changes a password; `make serve` runs this instead, so setting
a new password and serving again is all an operator does.
"""

import os

from django.contrib.auth import get_user_model
from django.core.management.base import CommandError

from embeddings.management.base import EmbeddingCommand


class Command(EmbeddingCommand):
    help = "Create or update the superuser named by DJANGO_SUPERUSER_USERNAME (and _PASSWORD)."

    def announces_unserved_settings(self, options: dict) -> bool:
        return False  # nothing to do with vectors

    def handle(self, *args, **options) -> None:
        # Django's createsuperuser reads these names from the environment; so does this.
        username = os.environ.get("DJANGO_SUPERUSER_USERNAME")
        password = os.environ.get("DJANGO_SUPERUSER_PASSWORD")
        email = os.environ.get("DJANGO_SUPERUSER_EMAIL", "")
        if not username:
            self.stdout.write(
                "No admin user set up: set DJANGO_SUPERUSER_USERNAME and "
                "DJANGO_SUPERUSER_PASSWORD (or run `manage.py createsuperuser`)."
            )
            return
        if not password:
            raise CommandError(
                "DJANGO_SUPERUSER_USERNAME is set but DJANGO_SUPERUSER_PASSWORD is not: set it "
                "too (or unset both)",
                returncode=2,
            )
        users = get_user_model()
        user, created = users.objects.get_or_create(**{users.USERNAME_FIELD: username})
        user.set_password(password)
        user.email = email or user.email
        user.is_staff = user.is_superuser = user.is_active = True
        user.save()
        self.stdout.write(f"Admin user {username!r} {'created' if created else 'updated'}.")
