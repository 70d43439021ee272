"""The `clips` table when a site owns it: taking it in by `migrate`, and giving it back.

A site's table was made by another backend (any key type, naive timestamps, columns and
constraints the tool does not know, its own embedding columns and HNSW index) and is written
all day by a service that is not Django. What the tool adds is recorded in one tool-owned
table (`embedding_site_table`), so `migrate embeddings zero` removes exactly that. See
docs/site-database.md.
"""
