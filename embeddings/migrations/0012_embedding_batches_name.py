# The admin's sidebar said "Embedding batchs".

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("embeddings", "0011_site_table"),
    ]

    operations = [
        migrations.AlterModelOptions(
            name="embeddingbatch",
            options={
                "ordering": ["-created_at", "-id"],
                "verbose_name_plural": "embedding batches",
            },
        ),
    ]
