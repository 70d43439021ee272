"""Realistic demo clips, so a fresh install has something worth embedding and searching.

`generate_demo_clips` is pure (same seed, start and `now` give the same clips) and knows
nothing of the database; `load_demo_clips` streams it into `clips` with PostgreSQL COPY,
which loads 100,000 clips in a few seconds where ORM inserts would take minutes.
"""

import random
import string
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db import connection, transaction
from django.utils import timezone

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

COPY_COLUMNS = (
    "twitch_clip_id",
    "title",
    "broadcaster_name",
    "creator_name",
    "game_id",
    "game_name",
    "is_removed",
    "created_at",
    "embedding_attempts",
)


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


@dataclass(frozen=True)
class DemoLoadResult:
    """What one load wrote, for the command's summary and for benchmarks."""

    loaded: int
    removed: int
    seconds: float

    @property
    def live(self) -> int:
        return self.loaded - self.removed


@dataclass(frozen=True)
class _Game:
    id: str
    name: str
    weight: int
    templates: tuple[str, ...]
    fillers: dict[str, tuple[str, ...]]


# Twitch category ids (the well-known ones are real); "Just Chatting" is a category too.
GAMES: tuple[_Game, ...] = (
    _Game(
        "516575",
        "Valorant",
        12,
        (
            "insane 1v{n} clutch on {map}",
            "{agent} ace on {map} with a {gun}",
            "this {agent} lineup on {map} is illegal",
            "hit a 4k with the {gun} and my team still lost the round",
            "radiant lobby {agent} diff",
            "the {gun} spray transfer nobody saw coming",
            "flashed my whole team on {map} again",
            "ninja defuse on {map} while they were dancing",
        ),
        {
            "map": ("Ascent", "Bind", "Haven", "Split", "Lotus", "Sunset", "Icebox", "Breeze"),
            "agent": ("Jett", "Reyna", "Sage", "Omen", "Raze", "Sova", "Killjoy", "Chamber"),
            "gun": ("Operator", "Vandal", "Phantom", "Sheriff", "Marshal", "Ghost"),
        },
    ),
    _Game(
        "21779",
        "League of Legends",
        12,
        (
            "{champ} pentakill in {place}",
            "baron steal with {champ} smite at 1 hp",
            "outplayed a {champ} 1v2 in {place}",
            "the {champ} flash that won us the game",
            "{champ} solo kills the enemy jungler at level {n}",
            "this {champ} combo should be nerfed",
            "full build {champ} one-shots their ADC",
            "elder dragon fight goes completely wrong",
        ),
        {
            "champ": ("Yasuo", "Lee Sin", "Ahri", "Thresh", "Jinx", "Zed", "Lux", "Kai'Sa"),
            "place": ("top lane", "the river", "bot lane", "mid", "the enemy jungle"),
        },
    ),
    _Game(
        "27471",
        "Minecraft",
        10,
        (
            "chat can't believe this speedrun skip",
            "found {n} diamonds in the first minute",
            "creeper blows up the whole {build}",
            "killed the Ender Dragon with a {item}",
            "nether portal spawns inside a {biome}",
            "hardcore world ends because of a {mob}",
            "built a working {build} in survival",
            "the luckiest {biome} seed ever",
        ),
        {
            "build": ("castle", "redstone computer", "iron farm", "starter base", "bridge"),
            "item": ("wooden sword", "bed", "bow", "trident", "fishing rod"),
            "biome": ("bastion", "ocean monument", "desert temple", "mushroom island"),
            "mob": ("skeleton", "enderman", "warden", "baby zombie", "ghast"),
        },
    ),
    _Game(
        "32399",
        "Counter-Strike 2",
        10,
        (
            "AWP ace on {map} in overtime",
            "deagle one-tap through smoke on {map}",
            "1v{n} clutch to win the half on {map}",
            "ninja defuse on {map} B site",
            "the {gun} spray that broke Faceit",
            "eco round {gun} {n}k on {map}",
            "jumping no-scope on {map} mid",
        ),
        {
            "map": ("Mirage", "Inferno", "Nuke", "Dust2", "Ancient", "Anubis", "Vertigo"),
            "gun": ("AK-47", "M4A1-S", "Deagle", "Scout", "MP9", "Tec-9"),
        },
    ),
    _Game(
        "33214",
        "Fortnite",
        10,
        (
            "victory royale with {n} eliminations",
            "box fight masterclass at {poi}",
            "zero build final circle 1v{n}",
            "cranked 90s and got laser beamed at {poi}",
            "won the game with only a {item}",
            "landed {poi} and wiped the whole lobby",
            "the storm killed me with a {item} in my hand",
        ),
        {
            "poi": ("Tilted Towers", "Pleasant Park", "Retail Row", "Lazy Lake", "Salty Springs"),
            "item": ("pump shotgun", "gray pistol", "grappler", "shockwave grenade"),
        },
    ),
    _Game(
        "512953",
        "Elden Ring",
        7,
        (
            "no-hit {boss} on first try",
            "{boss} with a perfect parry at the end",
            "finally beat {boss} after {n} hours",
            "one-shot {boss} with a {weapon} build",
            "jumped off the cliff after beating {boss}",
            "{boss} phase 2 goes horribly wrong",
        ),
        {
            "boss": ("Malenia", "Margit", "Radahn", "Godrick", "Mohg", "Rennala", "Messmer"),
            "weapon": ("Rivers of Blood", "Moonveil", "greatsword", "bleed katana", "frost"),
        },
    ),
    _Game(
        "509658",
        "Just Chatting",
        14,
        (
            "chat made me do the {thing}",
            "reacting to my old {thing} clip",
            "{n} gifted subs in one minute",
            "chat finds out what happened on stream",
            "the IRL stream goes wrong at the {place}",
            "subathon day {n} and I'm losing it",
            "donation message made me cry",
            "cooking stream sets off the fire alarm",
        ),
        {
            "thing": ("karaoke", "dance", "hot sauce challenge", "tier list", "Q&A"),
            "place": ("airport", "gym", "grocery store", "concert", "subway"),
        },
    ),
    _Game(
        "511224",
        "Apex Legends",
        9,
        (
            "{legend} 20 bomb in {n} minutes",
            "4k damage {legend} carry",
            "third party at {poi} goes perfectly",
            "{legend} ult saves the whole squad",
            "1v3 squad wipe with the {gun}",
            "landed {poi} and got the predator badge",
        ),
        {
            "legend": ("Wraith", "Octane", "Pathfinder", "Horizon", "Bloodhound", "Lifeline"),
            "poi": ("Fragment", "Skull Town", "World's Edge", "Olympus", "Storm Point"),
            "gun": ("R-301", "Peacekeeper", "Wingman", "Kraber", "R-99"),
        },
    ),
    _Game(
        "32982",
        "Grand Theft Auto V",
        8,
        (
            "police chase across {place} ends in the ocean",
            "the {job} heist goes completely sideways",
            "RP moment: my character gets arrested at {place}",
            "stole a {car} and crashed it in {n} seconds",
            "NoPixel court case goes off the rails",
            "wanted level {n} escape through {place}",
        ),
        {
            "place": ("Vinewood", "Sandy Shores", "Paleto Bay", "the airport", "the pier"),
            "job": ("Pacific Standard", "Fleeca", "casino", "jewelry store"),
            "car": ("police cruiser", "tow truck", "supercar", "bus"),
        },
    ),
    _Game(
        "29595",
        "Dota 2",
        7,
        (
            "{hero} rampage in {place}",
            "Roshan steal with {hero}",
            "Pudge hook of the year",
            "{hero} play of the year",
            "{n} minute comeback from mega creeps",
            "the {hero} Black Hole that won the game",
            "courier snipe with {hero}",
        ),
        {
            "hero": ("Pudge", "Invoker", "Anti-Mage", "Enigma", "Techies", "Faceless Void"),
            "place": ("the Roshan pit", "mid lane", "the enemy high ground", "the jungle"),
        },
    ),
    _Game(
        "515025",
        "Overwatch 2",
        7,
        (
            "{hero} team kill on {map}",
            "nano blade wipes the whole team on {map}",
            "sleep dart denied the {hero} ult",
            "{hero} 1v{n} on the point at {map}",
            "overtime hold on {map} as {hero}",
        ),
        {
            "hero": ("Genji", "Ana", "Reinhardt", "Tracer", "Kiriko", "Widowmaker", "D.Va"),
            "map": ("King's Row", "Ilios", "Lijiang Tower", "Numbani", "Dorado"),
        },
    ),
    _Game(
        "30921",
        "Rocket League",
        6,
        (
            "flip reset double tap goal",
            "ceiling shot in overtime",
            "air dribble from our own {place}",
            "zero-second goal to force overtime",
            "{n} saves in a row and then an own goal",
            "musty flick in {rank} ranked",
        ),
        {
            "place": ("goal line", "corner", "half"),
            "rank": ("Grand Champ", "Supersonic Legend", "Diamond", "Champion"),
        },
    ),
    _Game(
        "490655",
        "Baldur's Gate 3",
        5,
        (
            "nat 20 persuasion check saves {companion}",
            "crit fail on the most important roll",
            "{companion} romance scene goes wrong",
            "Honour mode wipe at {place}",
            "pushed the boss off a cliff at {place}",
            "{companion} betrays the party",
        ),
        {
            "companion": ("Astarion", "Karlach", "Shadowheart", "Lae'zel", "Gale", "Wyll"),
            "place": ("the Grove", "Moonrise Towers", "the Underdark", "the Nautiloid"),
        },
    ),
    _Game(
        "490147",
        "Hollow Knight",
        4,
        (
            "hitless {boss} in the Pantheon of Hallownest",
            "Path of Pain finally done after {n} attempts",
            "pogo skip nobody has seen before",
            "{boss} radiant difficulty clear",
            "nail only {boss}",
        ),
        {"boss": ("Radiance", "Nightmare King Grimm", "Hornet", "Pure Vessel", "Mantis Lords")},
    ),
    _Game(
        "743",
        "Chess",
        5,
        (
            "brilliant move {piece} sacrifice in blitz",
            "queen sac for mate in {n}",
            "Bongcloud opening against a {rating} player",
            "en passant denied, chat goes wild",
            "flagged with mate on the board in bullet",
            "{piece} fork wins the game against a GM",
        ),
        {
            "piece": ("queen", "rook", "knight", "bishop", "pawn"),
            "rating": ("1700", "2200", "2500", "grandmaster"),
        },
    ),
)

# Titles for clips without a game, and reactions appended to some titles.
NO_GAME_TEMPLATES = (
    "chat can't believe this",
    "stream goes offline at the worst moment",
    "the setup falls apart live",
    "mic was on the whole time",
    "raid of {n} viewers at the end",
)
REACTIONS = ("LUL", "KEKW", "PogChamp", "💀", "W", "!!!", "OMEGALUL", "clip it", "😂")

_NAME_STARTS = (
    "Shadow", "Pixel", "Frost", "Neon", "Lunar", "Toxic", "Silent", "Crimson", "Cosmic", "Turbo",
    "Lazy", "Salty", "Sneaky", "Mighty", "Tiny", "Golden", "Rusty", "Spicy", "Wild", "Chill",
    "Dark", "Lucky", "Captain", "Sir", "Mr", "xX", "Its", "The", "Real", "Not",
)  # fmt: skip
_NAME_ENDS = (
    "Fox", "Wolf", "Gamer", "Ninja", "Sniper", "Panda", "Dragon", "Knight", "Ghost", "Tater",
    "Goblin", "Viper", "Noodle", "Raven", "Bear", "Moth", "Waffle", "Titan", "Otter", "Wizard",
    "Queen", "King", "Bandit", "Pilot", "Cat", "Toast",
)  # fmt: skip
_NAME_TAILS = ("", "", "", "TV", "_", "Live", "GG", "YT", "x", "OW")

# Twitch clip slugs are two adjectives, an animal and an emote: `CleverTinyOtterKappa-...`.
_SLUG_ADJECTIVES = (
    "Clever", "Tiny", "Brave", "Sleepy", "Fancy", "Shiny", "Angry", "Happy", "Gentle", "Quick",
    "Fierce", "Proud", "Odd", "Bright", "Calm", "Lively",
)  # fmt: skip
_SLUG_ANIMALS = (
    "Otter", "Penguin", "Falcon", "Llama", "Turtle", "Badger", "Salamander", "Hyena", "Moose",
    "Koala", "Lobster", "Walrus",
)  # fmt: skip
_SLUG_EMOTES = (
    "Kappa", "PogChamp", "ResidentSleeper", "BibleThump", "SwiftRage", "Kreygasm", "DansGame",
    "PJSalt", "FailFish", "NotLikeThis", "VoHiYo", "HeyGuys",
)  # fmt: skip
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


def next_demo_index() -> int:
    """One past the highest demo index already in `clips`, so a new load cannot collide."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT max((regexp_match(twitch_clip_id, '_([0-9]+)$'))[1]::bigint) "
            "FROM clips WHERE twitch_clip_id ~ %s",
            [DEMO_TWITCH_ID_REGEX],
        )
        (highest,) = cursor.fetchone()
    return 0 if highest is None else highest + 1


def load_demo_clips(
    count: int, *, seed: int = 0, replace: bool = False, now: datetime | None = None
) -> DemoLoadResult:
    """Write `count` demo clips in one transaction with COPY; `replace` empties `clips` first.

    Without `replace` the clips are added after any already loaded. The table is locked
    against other writers for the load, so two loaders cannot pick the same numbers.
    """
    if count <= 0:
        raise ValueError(f"count must be positive, got {count}")
    now = now or timezone.now()
    started = time.perf_counter()
    removed = 0
    with transaction.atomic(), connection.cursor() as cursor:
        if replace:
            cursor.execute("TRUNCATE clips")
        else:
            cursor.execute("LOCK TABLE clips IN SHARE ROW EXCLUSIVE MODE")
        start = 0 if replace else next_demo_index()
        # COPY applies no Django defaults: embedding_attempts is written explicitly, and
        # text_hash (a generated column) is left for PostgreSQL to compute.
        columns = ", ".join(COPY_COLUMNS)
        with cursor.copy(f"COPY clips ({columns}) FROM STDIN") as copy:
            for clip in generate_demo_clips(count, seed=seed, now=now, start=start):
                removed += clip.is_removed
                copy.write_row(
                    (
                        clip.twitch_clip_id,
                        clip.title,
                        clip.broadcaster_name,
                        clip.creator_name,
                        clip.game_id,
                        clip.game_name,
                        clip.is_removed,
                        clip.created_at,
                        0,
                    )
                )
    return DemoLoadResult(loaded=count, removed=removed, seconds=time.perf_counter() - started)
