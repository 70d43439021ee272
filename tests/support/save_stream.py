"""A site writing clips through the ORM, as a process of its own (`python -m`), for live sync's
tests and benchmark: a steady stream of `create()`s, a `bulk_create`, or a `QuerySet.update`.

Prints one JSON object: the commit time (epoch seconds) of each clip it wrote, by
`twitch_clip_id`, so a caller can measure the lag from commit to stored vector.

    python -m tests.support.save_stream stream --rate 20 --seconds 10 --prefix run1
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path


def _setup() -> None:
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
    django.setup()


def stream(prefix: str, rate: float, seconds: float) -> dict[str, float]:
    """`rate` clips a second, each saved (and committed) on its own, for `seconds`."""
    from embeddings.models import Clip

    committed: dict[str, float] = {}
    started = time.monotonic()
    for n in range(int(rate * seconds)):
        # Pacing a load generator: the n-th save is due at n / rate seconds.
        time.sleep(max(0.0, started + n / rate - time.monotonic()))
        clip_id = f"{prefix}-{n}"
        Clip.objects.create(
            twitch_clip_id=clip_id,
            title=f"Live clip {n} of {prefix}",
            broadcaster_name=f"streamer{n % 13}",
            creator_name=f"viewer{n % 17}",
            game_name=["Valorant", "Minecraft", "Fortnite"][n % 3],
        )
        committed[clip_id] = time.time()
    return committed


def bulk(prefix: str, count: int) -> dict[str, float]:
    from embeddings.models import Clip

    clips = [
        Clip(
            twitch_clip_id=f"{prefix}-{n}",
            title=f"Bulk clip {n} of {prefix}",
            broadcaster_name=f"streamer{n % 5}",
            creator_name=f"viewer{n % 7}",
        )
        for n in range(count)
    ]
    Clip.objects.bulk_create(clips)
    now = time.time()
    return {clip.twitch_clip_id: now for clip in clips}


def retitle(prefix: str) -> dict[str, float]:
    """`QuerySet.update` of the title of every clip whose id starts with `prefix`."""
    from embeddings.models import Clip

    clips = Clip.objects.filter(twitch_clip_id__startswith=prefix)
    ids = list(clips.values_list("twitch_clip_id", flat=True))
    clips.update(title=f"Retitled by {prefix}")
    now = time.time()
    return dict.fromkeys(ids, now)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=("stream", "bulk", "retitle"))
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--rate", type=float, default=20.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--count", type=int, default=100)
    args = parser.parse_args()
    _setup()
    if args.mode == "stream":
        committed = stream(args.prefix, args.rate, args.seconds)
    elif args.mode == "bulk":
        committed = bulk(args.prefix, args.count)
    else:
        committed = retitle(args.prefix)
    print(json.dumps(committed))


if __name__ == "__main__":
    main()


def run_saver(env: dict[str, str], *args: str) -> dict[str, float]:
    """Run this module as its own process (a web server of the site); its commit times."""
    done = subprocess.run(
        [sys.executable, "-m", "tests.support.save_stream", *args],
        cwd=Path(__file__).resolve().parents[2],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def lags(committed: dict[str, float]) -> list[float]:
    """Seconds from each clip's commit to its stored vector (None-free: every clip has one)."""
    from embeddings.models import Clip

    made = dict(
        Clip.objects.filter(twitch_clip_id__in=committed).values_list(
            "twitch_clip_id", "embedding_generated_at"
        )
    )
    return sorted(made[clip].timestamp() - at for clip, at in committed.items())


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]
