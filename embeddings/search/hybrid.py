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
sorted by. The
vector side is `vector.search_queryset` (live clips with a current vector, through the HNSW
index, under the same SET LOCAL settings); the text side holds live clips only. Like
`vector.py`, this module never imports the models: it works on the Clip queryset it is given.
"""

from typing import Literal

import numpy as np
from django.contrib.postgres.search import (
    SearchQuery,
    SearchQueryField,
    SearchRank,
    SearchVector,
    SearchVectorCombinable,
    SearchVectorField,
)
from django.db import connections
from django.db.models import (
    BooleanField,
    Case,
    Expression,
    F,
    FloatField,
    Func,
    IntegerField,
    Model,
    QuerySet,
    Value,
    When,
)
from django.db.models.functions import Cast, Coalesce

from embeddings.app_settings import MAX_EF_SEARCH, EmbeddingSettings
from embeddings.exceptions import InvalidSearch
from embeddings.search.vector import (
    SEARCH_SETTINGS_SQL,
    _check_k,
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
RANKED_MATCHES = 100  # text matches read and ranked at most (see text_queryset)
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


class _Matches(Func):
    """`document @@ query`, usable in filter() and When() (the GIN index answers it)."""

    arg_joiner = " @@ "
    template = "(%(expressions)s)"
    output_field = BooleanField()


class _TsQuery(Func):
    """Two tsqueries OR-ed: `a || b`."""

    arg_joiner = " || "
    template = "(%(expressions)s)"
    output_field = SearchQueryField()


def _handles(words: list[str], weights: str = "") -> Expression:
    """The words as handle lexemes, `'@w1':A | '@w2':A`: a tsquery cast from its text form,
    since to_tsquery would run them through the parser and split them as it splits handles."""
    restriction = f":{weights}" if weights else ""
    quoted = (
        f"'{HANDLE_MARK}" + word.replace("\\", "\\\\").replace("'", "''") + f"'{restriction}"
        for word in words
    )
    return Cast(Value(" | ".join(quoted)), SearchQueryField())


class TextQuery:
    """What the text side looks for, as SQL expressions over the document column."""

    def __init__(self, text: str) -> None:
        self.text = text
        # Whitespace-separated, as typed: `saltyknight_861` stays whole (and `saltyknight_861,`
        # is no handle). Duplicates out, so no word counts twice in ts_rank.
        words = (w.removeprefix(HANDLE_MARK) for w in text.lower().split())
        self.words = list(dict.fromkeys(w for w in words if 0 < len(w) <= MAX_HANDLE_LENGTH))

    def every_word(self) -> Expression:
        """The clips holding every word of the query (names included, as words)."""
        return SearchQuery(self.text, config="english", search_type="plain")

    def tsquery(self) -> Expression:
        words = self.every_word()
        if not self.words:
            return words
        return _TsQuery(words, _handles(self.words))

    def complete(self) -> Expression:
        """1 when the clip holds every word of the query, else 0: such a clip ranks above one
        that matches fewer (a name alone, say), whatever the vectors say."""
        return Case(
            When(_Matches(stored_document(), self.every_word()), then=Value(1)),
            default=Value(0),
            output_field=IntegerField(),
        )

    def named(self) -> Expression:
        """BROADCASTER_NAMED, CREATOR_NAMED or 0: whether a word of the query is a handle."""
        if not self.words:
            return Value(0, output_field=IntegerField())
        document = stored_document()
        return Case(
            When(_Matches(document, _handles(self.words, "A")), then=Value(BROADCASTER_NAMED)),
            When(_Matches(document, _handles(self.words, "B")), then=Value(CREATOR_NAMED)),
            default=Value(0),
            output_field=IntegerField(),
        )


def text_queryset(
    queryset: QuerySet, query: TextQuery, n: int, *, exclude_pk: int | None = None
) -> QuerySet:
    """The text side, lazy (for EXPLAIN): live clips matching the query through the GIN index,
    those naming a handle first, then by ts_rank, `n` of them. Annotates `named`, `text_rank`.

    Only the first RANKED_MATCHES matches found are ranked: a game's name is in 88,000 of
    1,000,000 demo clips, and reading them all for ts_rank took 230 ms, the first 100 22 ms
    (nearly all of it the GIN bitmap of the 88,000); matches that many mostly tie anyway."""
    queryset = queryset.live()
    if exclude_pk is not None:
        queryset = queryset.exclude(pk=exclude_pk)
    tsquery = query.tsquery()
    # Unordered: the first matches the GIN bitmap yields. Ordered by id (the model's default),
    # the planner walked the primary key instead: 200,000 rows for a handle's first 1,000 clips.
    found = queryset.filter(_Matches(stored_document(), tsquery)).order_by().values("pk")
    return (
        queryset.filter(pk__in=found[: max(n, RANKED_MATCHES)])
        .defer("embedding", DOCUMENT)
        .annotate(
            named=query.named(),
            complete=query.complete(),
            text_rank=SearchRank(stored_document(), tsquery),
        )
        .order_by("-named", "-complete", "-text_rank", "pk")[:n]
    )


# {nearest}, {matched}: the two sides' own SQL (their ORDER BY and LIMIT inside), numbered
# again here because the HNSW iterative scan may yield rows slightly out of order. Equal
# scores (text rank r against vector rank r) go to the text side: its words are evidence.
# Only the best k are joined back to the clips: every row read there is a heap page.
FUSED_SQL = """
WITH nearest AS ({nearest}),
matched AS ({matched}),
fused AS (
    SELECT coalesce(v.id, t.id) AS id, v.distance,
           t.rank AS text_position,
           coalesce(t.named, 0) * {named_tier} + coalesce(t.complete, 0) * {complete_tier}
           + coalesce(1.0::float8 / ({rrf_k} + v.rank), 0)
           + coalesce(1.0::float8 / ({rrf_k} + t.rank), 0) AS score
    FROM (SELECT id, distance, row_number() OVER (ORDER BY distance, id) AS rank
          FROM nearest) AS v
    FULL OUTER JOIN
         (SELECT id, named, complete,
                 row_number() OVER (ORDER BY named DESC, complete DESC, text_rank DESC, id)
                 AS rank
          FROM matched) AS t
    ON t.id = v.id
),
best AS (
    SELECT * FROM fused
    ORDER BY score DESC, text_position NULLS LAST, id
    LIMIT %s
)
SELECT {columns}, best.distance, best.score
FROM best JOIN {table} ON {table}.{pk} = best.id
ORDER BY best.score DESC, best.text_position NULLS LAST, best.id
"""


def hybrid_sql(
    queryset: QuerySet,
    vector: np.ndarray,
    query: TextQuery,
    k: int,
    *,
    config: EmbeddingSettings,
    exclude_pk: int | None = None,
) -> tuple[str, list]:
    """The hybrid statement and its parameters (for EXPLAIN): both sides and their fusion."""
    n = max(k, CANDIDATES)
    nearest = search_queryset(queryset, vector, n, config=config, exclude_pk=exclude_pk)
    matched = text_queryset(queryset, query, n, exclude_pk=exclude_pk)
    nearest_sql, nearest_params = nearest.values("id", "distance").query.sql_with_params()
    matched_sql, matched_params = matched.values(
        "id", "named", "complete", "text_rank"
    ).query.sql_with_params()
    quote = connections[queryset.db].ops.quote_name
    meta = queryset.model._meta
    table = quote(meta.db_table)
    columns = ", ".join(
        f"{table}.{quote(field.column)}"
        for field in meta.concrete_fields
        if field.name not in ("embedding", DOCUMENT)
    )
    sql = FUSED_SQL.format(
        nearest=nearest_sql,
        matched=matched_sql,
        rrf_k=RRF_K,
        named_tier=NAMED_TIER,
        complete_tier=COMPLETE_TIER,
        columns=columns,
        table=table,
        pk=quote(meta.pk.column),
    )
    return sql, [*nearest_params, *matched_params, k]


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
    by its words alone. A clip as the query searches by its stored vector and by its title,
    names and game as words."""
    if mode not in MODES:
        raise InvalidSearch(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
    if mode == "vector":
        return search_clips(
            queryset, text_or_clip, k, ef_search=ef_search, service=service, config=config
        )
    _check_k(k)
    if ef_search is not None and not 1 <= ef_search <= MAX_EF_SEARCH:
        raise InvalidSearch(
            f"ef_search (EMBEDDING_SEARCH_EF) must be between 1 and {MAX_EF_SEARCH}, "
            f"not {ef_search}"
        )
    exclude_pk = text_or_clip.pk if isinstance(text_or_clip, queryset.model) else None
    if exclude_pk is None and (not text_or_clip or not text_or_clip.strip()):
        raise InvalidSearch("the query text is empty: say what to look for")
    query = TextQuery(text_or_clip if exclude_pk is None else _words_of(text_or_clip))

    def embed(version: EmbeddingSettings) -> np.ndarray | None:
        if mode == "text":
            return None
        vector = query_vector(queryset, text_or_clip, exclude_pk, version, service)
        if len(vector) != version.dimensions:
            raise InvalidSearch(
                f"the query vector has {len(vector)} dimensions, the clips {version.dimensions}"
            )
        return vector

    def search(version: EmbeddingSettings, vector: np.ndarray | None) -> list:
        ef = version.search_ef if ef_search is None else ef_search
        if not 1 <= ef <= MAX_EF_SEARCH:
            raise InvalidSearch(
                f"ef_search (EMBEDDING_SEARCH_EF) must be between 1 and {MAX_EF_SEARCH}, not {ef}"
            )
        db = queryset.db
        with connections[db].cursor() as cursor:
            n = max(k, CANDIDATES)
            cursor.execute(SEARCH_SETTINGS_SQL, [str(min(max(ef, n), MAX_EF_SEARCH))])
        if vector is None:
            matched = text_queryset(queryset, query, k, exclude_pk=exclude_pk)
            return list(matched.annotate(distance=Value(None, output_field=FloatField())))
        sql, params = hybrid_sql(queryset, vector, query, k, config=version, exclude_pk=exclude_pk)
        return list(queryset.model._default_manager.db_manager(db).raw(sql, params))

    return served_search(queryset, config, embed, search)


def _words_of(clip: Model) -> str:
    """A clip as a text query: its title, names and game (its embedded text's labels, such as
    `Title:`, are in no clip's words, so every word would have to match)."""
    parts = (clip.title, clip.broadcaster_name, clip.creator_name, clip.game_name)
    return " ".join(part for part in parts if part)
