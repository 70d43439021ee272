# Two indexes made fit for a site's table, where rows written before adoption have NULL in
# the tool's text columns until the tool writes them (see embeddings.site_table):
# - edited clips: a clip is edited when its text hash is known and differs from its vector's;
#   a NULL `text_hash` is a row whose text is unchanged since the table was taken in, and a
#   vector the site made for it is no edit for live sync to pay for;
# - the words of hybrid search: over the stored document, or the same words computed where it
#   is NULL (embeddings.search.hybrid.stored_document).
# On the tool's own table neither column is ever NULL, so both select what they did. Rebuilt
# CONCURRENTLY: writes go on meanwhile.

import django.contrib.postgres.indexes
import django.contrib.postgres.search
import django.db.models.functions.comparison
from django.contrib.postgres.operations import AddIndexConcurrently, RemoveIndexConcurrently
from django.db import migrations, models

import embeddings.search.hybrid
from embeddings.site_table.operations import OnOwnTable


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("embeddings", "0009_change_feed"),
    ]

    operations = [
        OnOwnTable(RemoveIndexConcurrently(model_name="clip", name="clips_edited_idx")),
        OnOwnTable(
            AddIndexConcurrently(
                model_name="clip",
                index=models.Index(
                    condition=models.Q(
                        ("is_removed", False),
                        ("embedding__isnull", False),
                        ("text_hash__isnull", False),
                        models.Q(("embedding_text_hash", models.F("text_hash")), _negated=True),
                    ),
                    fields=["id"],
                    name="clips_edited_idx",
                ),
            )
        ),
        OnOwnTable(RemoveIndexConcurrently(model_name="clip", name="clips_search_document_gin")),
        OnOwnTable(
            AddIndexConcurrently(
                model_name="clip",
                index=django.contrib.postgres.indexes.GinIndex(
                    django.db.models.functions.comparison.Coalesce(
                        models.F("search_document"),
                        django.contrib.postgres.search.CombinedSearchVector(
                            django.contrib.postgres.search.CombinedSearchVector(
                                django.contrib.postgres.search.CombinedSearchVector(
                                    django.contrib.postgres.search.CombinedSearchVector(
                                        embeddings.search.hybrid.HandleLexeme(
                                            models.F("broadcaster_name"), weight="A"
                                        ),
                                        "||",
                                        embeddings.search.hybrid.HandleLexeme(
                                            models.F("creator_name"), weight="B"
                                        ),
                                        None,
                                    ),
                                    "||",
                                    django.contrib.postgres.search.SearchVector(
                                        "game_name", config="english", weight="C"
                                    ),
                                    None,
                                ),
                                "||",
                                django.contrib.postgres.search.SearchVector(
                                    "title", config="english", weight="D"
                                ),
                                None,
                            ),
                            "||",
                            django.contrib.postgres.search.SearchVector(
                                "broadcaster_name", "creator_name", config="simple", weight="D"
                            ),
                            None,
                        ),
                        output_field=django.contrib.postgres.search.SearchVectorField(),
                    ),
                    name="clips_search_document_gin",
                ),
            )
        ),
    ]
