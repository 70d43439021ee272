"""Realistic demo clips, so a fresh install has something worth embedding and searching.

`generate_demo_clips` is pure (same seed, start and `now` give the same clips) and knows
nothing of the database; `embeddings.demo.loader` writes its clips into `clips`. The word
lists live in `words.json`, so this module holds only how they are combined.
"""

import json
import random
import string
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from importlib.resources import files
from typing import Any

# Fractions of generated clips; CONTRACT-level behaviour the tests pin down.
DUPLICATE_FRACTION = 0.02
REMOVED_FRACTION = 0.03
NO_GAME_FRACTION = 0.03
SELF_CLIPPED_FRACTION = 0.10
RECENT_FRACTION = 0.20
RECENT_DAYS = 7
HISTORY_DAYS = 90
BROADCASTER_COUNT = 200
CREATOR_COUNT = 1500

# Demo twitch ids end in `_<index>`: the loader continues after the highest index present, so
# loading twice never collides. The same pattern, in PostgreSQL's regex dialect, finds them.
TWITCH_ID_SUFFIX_LENGTH = 10
DEMO_TWITCH_ID_REGEX = rf"^[A-Za-z]+-[A-Za-z0-9]{{{TWITCH_ID_SUFFIX_LENGTH}}}_[0-9]+$"


@dataclass(frozen=True)
class DemoClip:
    twitch_clip_id: str
    title: str
    broadcaster_name: str
    creator_name: str
    game_id: str | None
    game_name: str | None
    is_removed: bool
    created_at: datetime

    def row(self) -> tuple:
        """The fields in declaration order (`ROW_COLUMNS`), as COPY writes them: a tuple
        literal, since `dataclasses.astuple` deep-copies every value."""
        return (
            self.twitch_clip_id,
            self.title,
            self.broadcaster_name,
            self.creator_name,
            self.game_id,
            self.game_name,
            self.is_removed,
            self.created_at,
        )


ROW_COLUMNS = tuple(DemoClip.__dataclass_fields__)  # the `clips` columns `DemoClip.row()` fills


@dataclass(frozen=True)
class _Game:
    id: str
    name: str
    weight: int
    templates: tuple[str, ...]
    fillers: dict[str, tuple[str, ...]]


def _read_words() -> dict[str, Any]:
    """Read from the installed package, so it works from a wheel as well as a checkout."""
    text = files("embeddings.demo").joinpath("words.json").read_text(encoding="utf-8")
    return json.loads(text)


def _game(entry: Mapping[str, Any]) -> _Game:
    return _Game(
        id=entry["id"],
        name=entry["name"],
        weight=entry["weight"],
        templates=tuple(entry["templates"]),
        fillers={name: tuple(values) for name, values in entry["fillers"].items()},
    )


_WORDS = _read_words()

GAMES: tuple[_Game, ...] = tuple(_game(entry) for entry in _WORDS["games"])
# Titles for clips without a game, and reactions appended to some titles.
NO_GAME_TEMPLATES: tuple[str, ...] = tuple(_WORDS["no_game_templates"])
REACTIONS: tuple[str, ...] = tuple(_WORDS["reactions"])

_NAME_STARTS: tuple[str, ...] = tuple(_WORDS["handles"]["starts"])
_NAME_ENDS: tuple[str, ...] = tuple(_WORDS["handles"]["ends"])
_NAME_TAILS: tuple[str, ...] = tuple(_WORDS["handles"]["tails"])

# Twitch clip slugs are two adjectives, an animal and an emote: `CleverTinyOtterKappa-...`.
_SLUG_ADJECTIVES: tuple[str, ...] = tuple(_WORDS["slugs"]["adjectives"])
_SLUG_ANIMALS: tuple[str, ...] = tuple(_WORDS["slugs"]["animals"])
_SLUG_EMOTES: tuple[str, ...] = tuple(_WORDS["slugs"]["emotes"])
_SUFFIX_ALPHABET = string.ascii_letters + string.digits


def _placeholders(template: str) -> tuple[str, ...]:
    return tuple(name for _, name, _, _ in string.Formatter().parse(template) if name)


def _fill(template: str, fillers: dict[str, tuple[str, ...]], rng: random.Random) -> str:
    values = {
        name: str(rng.randint(2, 12)) if name == "n" else rng.choice(fillers[name])
        for name in _placeholders(template)
    }
    return template.format(**values)


def _handle(rng: random.Random) -> str:
    """A Twitch-style login name built from parts, sometimes with a number."""
    name = rng.choice(_NAME_STARTS) + rng.choice(_NAME_ENDS) + rng.choice(_NAME_TAILS)
    if rng.random() < 0.4:
        name += str(rng.randint(1, 999))
    return name if rng.random() < 0.6 else name.lower()


def _unique_handles(rng: random.Random, count: int) -> list[str]:
    handles: dict[str, None] = {}
    while len(handles) < count:
        handles.setdefault(_handle(rng))
    return list(handles)


def _title(game: _Game | None, rng: random.Random) -> str:
    if game is None:
        title = _fill(rng.choice(NO_GAME_TEMPLATES), {}, rng)
    else:
        title = _fill(rng.choice(game.templates), game.fillers, rng)
    roll = rng.random()
    if roll < 0.25:
        title = f"{title} {rng.choice(REACTIONS)}"
    elif roll < 0.33:
        title = title.upper()
    elif roll < 0.6:
        title = title[0].upper() + title[1:]
    return title


def _twitch_clip_id(rng: random.Random, index: int) -> str:
    slug = (
        rng.choice(_SLUG_ADJECTIVES)
        + rng.choice(_SLUG_ADJECTIVES)
        + rng.choice(_SLUG_ANIMALS)
        + rng.choice(_SLUG_EMOTES)
    )
    suffix = "".join(rng.choices(_SUFFIX_ALPHABET, k=TWITCH_ID_SUFFIX_LENGTH))
    return f"{slug}-{suffix}_{index}"


def _created_at(rng: random.Random, now: datetime) -> datetime:
    """Most clips spread over three months, a fifth from the last week (clip sites skew recent)."""
    if rng.random() < RECENT_FRACTION:
        age = rng.uniform(0, RECENT_DAYS)
    else:
        age = rng.uniform(RECENT_DAYS, HISTORY_DAYS)
    return (now - timedelta(days=age)).replace(microsecond=0)


def generate_demo_clips(
    count: int, *, seed: int = 0, now: datetime, start: int = 0
) -> Iterator[DemoClip]:
    """Yield `count` clips numbered from `start`; the same arguments always give the same clips.

    Each broadcaster mostly streams one main game, so a semantic search about a game finds
    that game's clips. `start` only has to differ between loads to keep twitch ids unique.
    """
    if count < 0:
        raise ValueError(f"count must not be negative, got {count}")
    people = random.Random(f"demo-people:{seed}")
    broadcasters = _unique_handles(people, BROADCASTER_COUNT)
    creators = _unique_handles(people, CREATOR_COUNT)
    weights = [game.weight for game in GAMES]
    main_games = people.choices(GAMES, weights=weights, k=len(broadcasters))

    rng = random.Random(f"demo-clips:{seed}:{start}")
    earlier: list[tuple[str, str, str, _Game | None]] = []
    for index in range(start, start + count):
        if earlier and rng.random() < DUPLICATE_FRACTION:
            title, broadcaster, creator, game = rng.choice(earlier)
        else:
            which = rng.randrange(len(broadcasters))
            broadcaster = broadcasters[which]
            if rng.random() < NO_GAME_FRACTION:
                game = None
            elif rng.random() < 0.75:
                game = main_games[which]
            else:
                game = rng.choices(GAMES, weights=weights)[0]
            self_clipped = rng.random() < SELF_CLIPPED_FRACTION
            creator = broadcaster if self_clipped else rng.choice(creators)
            title = _title(game, rng)
            earlier.append((title, broadcaster, creator, game))
        yield DemoClip(
            twitch_clip_id=_twitch_clip_id(rng, index),
            title=title,
            broadcaster_name=broadcaster,
            creator_name=creator,
            game_id=game.id if game else None,
            game_name=game.name if game else None,
            is_removed=rng.random() < REMOVED_FRACTION,
            created_at=_created_at(rng, now),
        )
