# Hybrid search: the clip's words as a generated tsvector with a GIN index
# (see embeddings/search/hybrid.py). Adding a stored generated column rewrites the table.

import django.contrib.postgres.indexes
import django.contrib.postgres.search
from django.db import migrations, models

import embeddings.search.hybrid
from embeddings.site_table.operations import OnOwnTable


class Migration(migrations.Migration):
    dependencies = [
        ("embeddings", "0005_live_sync"),
    ]

    operations = [
        OnOwnTable(
            migrations.AddField(
                model_name="clip",
                name="search_document",
                field=models.GeneratedField(
                    db_persist=True,
                    expression=django.contrib.postgres.search.CombinedSearchVector(
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
            )
        ),
        OnOwnTable(
            migrations.AddIndex(
                model_name="clip",
                index=django.contrib.postgres.indexes.GinIndex(
                    fields=["search_document"], name="clips_search_document_gin"
                ),
            )
        ),
    ]
