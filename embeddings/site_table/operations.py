"""Migration operations that know whose `clips` table they run on."""

from django.db.migrations.operations.base import Operation

from embeddings.site_table.record import site_table


class OnOwnTable(Operation):
    """`operation` as written, on the table the tool created; on a site's adopted table only
    its state: the site's table gets what the tool needs from the adoption migration instead
    (catalog-only columns, a trigger, indexes built CONCURRENTLY), and loses nothing on the
    way out."""

    reduces_to_sql = False
    reversible = True

    def __init__(self, operation: Operation) -> None:
        self.operation = operation

    def deconstruct(self):
        return (self.__class__.__qualname__, [self.operation], {})

    def state_forwards(self, app_label, state) -> None:
        self.operation.state_forwards(app_label, state)

    def database_forwards(self, app_label, schema_editor, from_state, to_state) -> None:
        if site_table(schema_editor.connection) is None:
            self.operation.database_forwards(app_label, schema_editor, from_state, to_state)

    def database_backwards(self, app_label, schema_editor, from_state, to_state) -> None:
        if site_table(schema_editor.connection) is None:
            self.operation.database_backwards(app_label, schema_editor, from_state, to_state)

    def describe(self) -> str:
        return f"{self.operation.describe()} (on the tool's own clips table)"
