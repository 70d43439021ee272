"""`manage.py reconcile_coverage [--fix]`: prove the kept coverage counts against count(*).

Exit 0 when every bucket agrees, 1 listing the buckets that differ (after `--fix`: those
still differing once the base is counted again). See `embeddings.coverage.ledger`.
"""

from django.core.management.base import CommandError, CommandParser

from embeddings.coverage.ledger import describe, reconcile
from embeddings.management.base import EmbeddingCommand


class Command(EmbeddingCommand):
    help = "Check the coverage counts the triggers keep against a full count of clips."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--fix",
            action="store_true",
            help="when they differ, count the base again (one snapshot, no lock on clips)",
        )

    def announces_unserved_settings(self, options: dict) -> bool:
        return False  # counts every bucket, whatever is served

    def handle(self, *args, **opts) -> None:
        result = reconcile(fix=opts["fix"])
        for difference in result.found:
            self.stdout.write(describe(difference))
        if not result.found:
            self.stdout.write("coverage counts agree with count(*)")
            return
        if opts["fix"] and not result.left:
            self.stdout.write(f"fixed: {_buckets(len(result.found))} counted again")
            return
        raise CommandError(
            f"the kept counts differ from count(*) in {_buckets(len(result.left))}"
            + ("" if opts["fix"] else ": run with --fix to count them again"),
            returncode=1,
        )


def _buckets(count: int) -> str:
    return f"{count} bucket" if count == 1 else f"{count} buckets"
