"""Hybrid search: PostgreSQL full-text matches fused with the nearest vectors, in one statement.

Why: a vector ranks by meaning and is weak on names. With the local model the handle
`lunarfoxyt322` finds 4 of that broadcaster's 11 demo clips in its top 10, and people search a
clip site by names: a handle, a game, words of a title.

The text side. Every clip stores a generated `tsvector` (`search_document_expression`, GIN
indexed through `stored_document`): title and game through the `english` configuration
(stemmed, stop words out), the names through `simple`, and each handle also whole,
lowercased and marked, `@saltyknight_861`, as one lexeme. Whole, because the parser splits
that handle at the underscore; marked, so that handle lexemes never equal words: a query word
`clutch` looked up as a handle must not make the GIN index hand over every title holding
`clutch` for a recheck, nor the planner expect as many rows. Weights: A the broadcaster's
handle, B the creator's, C the game, D title words and name parts (ts_rank's default weights:
1.0, 0.4, 0.2, 0.1). A clip matches when it holds every
word of the query (`plainto_tsquery('english', q)`), or when a word of the query, lowercased,
is its broadcaster's or creator's handle (an `@` before it is allowed: people type handles so).

The fusion. The best CANDIDATES clips of each side are fused by reciprocal rank fusion (the
sum of 1 / (RRF_K + rank) over the sides a clip is on), except that clips whose broadcaster
the query names come first, then those whose creator it names: a handle is an identifier, and
the vector side, which cannot read it, must not push the named streamer's clips down. Within
each of those tiers, clips that hold every word of the query come before those that hold
fewer (`zephyrmoth clutch Valorant`: that streamer's clutch Valorant clips before their
others). The tiers are folded into the score each result carries, so it is the score it is
sorted by. The vector side is `vector.search_queryset` (live clips with a current vector,
through the HNSW index, under the same SET LOCAL settings); the text side holds live clips
only. The statement is composed in `statement.py`. Like `vector.py`, this module never imports
the models: it works on the Clip queryset it is given.
"""

from typing import Literal

import numpy as np
from django.contrib.postgres.search import (
    SearchVector,
    SearchVectorCombinable,
    SearchVectorField,
)
from django.db import connections
from django.db.models import Expression, F, Func, Model, QuerySet
from django.db.models.functions import Coalesce
from psycopg import sql

from embeddings.app_settings import MAX_EF_SEARCH, EmbeddingSettings
from embeddings.exceptions import InvalidSearch
from embeddings.search.checks import check_ef_search, check_k, check_query_text, check_vector
from embeddings.search.statement import (
    FUSED,
    TEXT_ONLY,
    TextSide,
    bound,
    columns_sql,
    text_side_sql,
    with_location,
)
from embeddings.search.vector import (
    SEARCH_SETTINGS_SQL,
    query_vector,
    search_clips,
    search_queryset,
    served_search,
)
from embeddings.service.embedding_service import EmbeddingService

Mode = Literal["hybrid", "vector", "text"]
MODES: tuple[Mode, ...] = ("hybrid", "vector", "text")
DOCUMENT = "search_document"  # the Clip field holding `search_document_expression()`
RRF_K = 60  # reciprocal rank fusion's usual constant: rank 1 leads rank 10 by 15%, not 10x
CANDIDATES = 50  # clips each side hands to the fusion (at least k)
RANKED_MATCHES = 100  # text matches read and ranked at most (see text_side)
MAX_HANDLE_LENGTH = 255  # the name columns' size: a longer query word cannot be a handle
HANDLE_MARK = "@"  # before every whole-handle lexeme: no parsed word starts with it
BROADCASTER_NAMED, CREATOR_NAMED = 2, 1  # the `named` tier, above every fused score
# The score a hybrid result carries and is sorted by: its `named` tier, then whether it holds
# every word of the query, then the fused rank (at most 2 / (RRF_K + 1), under 0.04).
NAMED_TIER, COMPLETE_TIER = 10, 1


class HandleLexeme(SearchVectorCombinable, Func):
    """A name whole, lowercased and marked (HANDLE_MARK) as one lexeme, at position 1 with
    `weight`. A tsvector literal, not array_to_tsvector: a lexeme without a position carries
    no weight, so it would rank as D. Migration 0006 names this class: a change to its SQL
    alters no existing column, so it needs a migration of its own."""

    template = (
        "CASE WHEN %(expressions)s = '' THEN ''::tsvector ELSE "
        f"('''{HANDLE_MARK}' || replace(replace(lower(%(expressions)s), '\\', '\\\\'), "
        "'''', '''''') || ''':1%(weight)s')::tsvector END"
    )
    output_field = SearchVectorField()
    config = None  # what SearchVector's `+` reads: a literal has no text search configuration

    def __init__(self, expression: Expression, *, weight: str) -> None:
        if weight not in "ABCD" or len(weight) != 1:
            raise ValueError(f"weight must be one of A, B, C, D, not {weight!r}")
        super().__init__(expression, weight=weight)


def search_document_expression() -> Expression:
    """The clip's words, as the generated column stores them. Every part is IMMUTABLE (each
    to_tsvector names its configuration), which PostgreSQL requires of a generated column."""
    return (
        HandleLexeme(F("broadcaster_name"), weight="A")
        + HandleLexeme(F("creator_name"), weight="B")
        + SearchVector("game_name", config="english", weight="C")
        + SearchVector("title", config="english", weight="D")
        + SearchVector("broadcaster_name", "creator_name", config="simple", weight="D")
    )


def stored_document() -> Expression:
    """What the GIN index holds: the stored document, or on a site's row the tool has not
    written yet (NULL there: see `embeddings.site_table`) the same words computed from its
    columns. The index is over this very expression, so PostgreSQL answers through it."""
    return Coalesce(F(DOCUMENT), search_document_expression(), output_field=SearchVectorField())


def _handles(words: list[str], weights: str) -> sql.Composable:
    """The words as handle lexemes, `'@w1':A | '@w2':A`: a tsquery cast from its text form,
    since to_tsquery would run them through the parser and split them as it splits handles."""
    quoted = (
        f"'{HANDLE_MARK}" + word.replace("\\", "\\\\").replace("'", "''") + f"'{weights}"
        for word in words
    )
    return sql.SQL("{}::tsquery").format(sql.Literal(" | ".join(quoted)))


class TextQuery:
    """What the text side looks for, as SQL over the clip's document."""

    def __init__(self, text: str) -> None:
        self.text = text
        # Whitespace-separated, as typed: `saltyknight_861` stays whole (and `saltyknight_861,`
        # is no handle). Duplicates out, so no word counts twice in ts_rank.
        words = (w.removeprefix(HANDLE_MARK) for w in text.lower().split())
        self.words = list(dict.fromkeys(w for w in words if 0 < len(w) <= MAX_HANDLE_LENGTH))

    def side(self) -> TextSide:
        """Matches: clips holding every word of the query (names included, as words) or a
        word as a handle. `every_word` ranks a clip holding every word above one that
        matches fewer (a name alone, say), whatever the vectors say."""
        every_word = sql.SQL("plainto_tsquery('english', {})").format(sql.Literal(self.text))
        if not self.words:
            return TextSide(every_word, every_word, None, None)
        return TextSide(
            sql.SQL("({} || {})").format(every_word, _handles(self.words, "")),
            every_word,
            _handles(self.words, ":A"),
            _handles(self.words, ":B"),
        )


def text_side(
    queryset: QuerySet, query: TextQuery, n: int, *, exclude_pk: int | None = None
) -> sql.Composed:
    """The text side's CTEs over the queryset's live clips: the first max(n, RANKED_MATCHES)
    matches ranked, those naming a handle first, then those holding every word, then by
    ts_rank (`statement.TEXT_SIDE`). A game's name is in 88,000 of 1,000,000 demo clips: ranking
    them all took 230 ms, and matches that many mostly tie anyway."""
    rows = queryset.live()
    if exclude_pk is not None:
        rows = rows.exclude(pk=exclude_pk)
    rows = with_location(rows.annotate(doc=stored_document())).values("id", "doc", "row_ctid")
    return text_side_sql(
        rows.order_by(), query.side(), max(n, RANKED_MATCHES), BROADCASTER_NAMED, CREATOR_NAMED
    )


def _statement(
    queryset: QuerySet,
    vector: np.ndarray | None,
    query: TextQuery,
    k: int,
    *,
    config: EmbeddingSettings | None,
    exclude_pk: int | None,
) -> tuple[list[str], sql.Composed]:
    """The hybrid statement (text alone if `vector` is None) and the clip fields it selects
    first; `distance` and, in hybrid, `score` follow them."""
    names, columns = columns_sql(queryset, ("embedding", DOCUMENT))
    meta = queryset.model._meta
    table, pk = sql.Identifier(meta.db_table), sql.Identifier(meta.pk.column)
    if vector is None or config is None:
        matched = text_side(queryset, query, k, exclude_pk=exclude_pk)
        return names, TEXT_ONLY.format(
            text_side=matched, columns=columns, table=table, pk=pk, k=sql.Literal(k)
        )
    n = max(k, CANDIDATES)
    nearest = search_queryset(queryset, vector, n, config=config, exclude_pk=exclude_pk)
    return names, FUSED.format(
        nearest=bound(nearest.values("id", "distance")),
        text_side=text_side(queryset, query, n, exclude_pk=exclude_pk),
        named_tier=sql.Literal(NAMED_TIER),
        complete_tier=sql.Literal(COMPLETE_TIER),
        rrf_k=sql.Literal(RRF_K),
        n=sql.Literal(n),
        k=sql.Literal(k),
        columns=columns,
        table=table,
        pk=pk,
    )


def hybrid_sql(
    queryset: QuerySet,
    vector: np.ndarray,
    query: TextQuery,
    k: int,
    *,
    config: EmbeddingSettings,
    exclude_pk: int | None = None,
) -> tuple[str, None]:
    """The hybrid statement (for EXPLAIN), its values bound in: no parameters (None)."""
    _, statement = _statement(queryset, vector, query, k, config=config, exclude_pk=exclude_pk)
    return _as_string(queryset, statement), None


def text_sql(
    queryset: QuerySet, query: TextQuery, k: int, *, exclude_pk: int | None = None
) -> tuple[str, None]:
    """The text mode's statement (for EXPLAIN), its values bound in: no parameters (None)."""
    _, statement = _statement(queryset, None, query, k, config=None, exclude_pk=exclude_pk)
    return _as_string(queryset, statement), None


def _as_string(queryset: QuerySet, statement: sql.Composed) -> str:
    connection = connections[queryset.db]
    connection.ensure_connection()
    return statement.as_string(connection.connection)


def find_clips(
    queryset: QuerySet,
    text_or_clip: "str | Model",
    k: int = 10,
    *,
    mode: Mode = "vector",
    ef_search: int | None = None,
    service: EmbeddingService | None = None,
    config: EmbeddingSettings | None = None,
) -> list:
    """The best `k` clips of `queryset` for a text or a clip (itself left out), best first, by
    `mode`: "vector" (`vector.search_clips`), "text" (full-text matches only, no embedding)
    or "hybrid" (both, fused). Each clip carries `distance`: cosine, or None for a clip found
    by its words alone, and in hybrid its `score`. A clip as the query searches by its stored
    vector and by its title, names and game as words."""
    if mode not in MODES:
        raise InvalidSearch(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
    if mode == "vector":
        return search_clips(
            queryset, text_or_clip, k, ef_search=ef_search, service=service, config=config
        )
    check_k(k)
    check_ef_search(ef_search)
    exclude_pk = text_or_clip.pk if isinstance(text_or_clip, queryset.model) else None
    if exclude_pk is None:
        check_query_text(text_or_clip)
    query = TextQuery(text_or_clip if exclude_pk is None else _words_of(text_or_clip))

    def embed(version: EmbeddingSettings) -> np.ndarray | None:
        if mode == "text":
            return None
        vector = query_vector(queryset, text_or_clip, exclude_pk, version, service)
        check_vector(vector, version.dimensions)
        return vector

    def search(version: EmbeddingSettings, vector: np.ndarray | None) -> list:
        ef = version.search_ef if ef_search is None else ef_search
        check_ef_search(ef)
        names, statement = _statement(
            queryset, vector, query, k, config=version, exclude_pk=exclude_pk
        )
        model, db = queryset.model, queryset.db
        with connections[db].cursor() as cursor:
            n = max(k, CANDIDATES)
            cursor.execute(SEARCH_SETTINGS_SQL, [str(min(max(ef, n), MAX_EF_SEARCH))])
            cursor.execute(statement)
            rows = cursor.fetchall()
        clips = []
        for row in rows:
            clip = model.from_db(db, names, row[: len(names)])
            clip.distance = row[len(names)]
            if vector is not None:
                clip.score = row[len(names) + 1]
            clips.append(clip)
        return clips

    return served_search(queryset, config, embed, search)


def _words_of(clip: Model) -> str:
    """A clip as a text query: its title, names and game (its embedded text's labels, such as
    `Title:`, are in no clip's words, so every word would have to match)."""
    parts = (clip.title, clip.broadcaster_name, clip.creator_name, clip.game_name)
    return " ".join(part for part in parts if part)
