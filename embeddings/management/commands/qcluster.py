"""`manage.py qcluster`: django-q2's own, with the app's configuration errors.

django-q2 starts its sentinel before it touches the broker, so a Redis that does not answer
surfaces as "sentinel exited with code 1" and a traceback; the broker is asked first here, so it
is one line naming REDIS_URL and exit 2, as for every command of the app.
"""

from django_q.brokers import get_broker
from django_q.brokers.redis_broker import Redis
from django_q.management.commands import qcluster

from embeddings.management.base import ConfigurationErrors


class Command(ConfigurationErrors, qcluster.Command):
    def handle(self, *args, **options) -> None:
        broker = get_broker()
        if isinstance(broker, Redis):
            # The client's own ping: the broker's `ping()` also logs its failure, a second line.
            broker.connection.ping()
        super().handle(*args, **options)
