"""A long-running process searching as a web server does, for the switch's tests: started with
the settings it was deployed with, it searches for a clip's own text every `--every` seconds
and checks that the clip comes back first at distance about 0.

Prints one JSON object when `--stop-file` appears: searches made, and every inconsistent one.

    python -m tests.support.searcher --ids 1,2,3 --every 0.3 --stop-file /tmp/stop
"""

import argparse
import json
import os
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--ids", required=True)
    parser.add_argument("--every", type=float, default=0.3)
    parser.add_argument("--stop-file", required=True)
    parser.add_argument("--ready-file", required=True)
    args = parser.parse_args()
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
    django.setup()
    from embeddings.models import Clip

    ids = [int(i) for i in args.ids.split(",")]
    texts = dict(Clip.objects.with_text().filter(pk__in=ids).values_list("pk", "text"))
    searches, wrong = 0, []
    Path(args.ready_file).touch()
    while not Path(args.stop_file).exists():
        started = time.monotonic()
        clip_id = ids[searches % len(ids)]
        try:
            found = Clip.objects.similar_to(texts[clip_id], k=3)
            first = (found[0].pk, found[0].distance) if found else None
            if first is None or first[0] != clip_id or abs(first[1]) > 1e-3:
                wrong.append({"clip": clip_id, "first": first})
        except Exception as err:  # an error is an inconsistent answer too: report it
            wrong.append({"clip": clip_id, "error": f"{type(err).__name__}: {err}"})
        searches += 1
        time.sleep(max(0.0, args.every - (time.monotonic() - started)))
    print(json.dumps({"searches": searches, "wrong": wrong}))


if __name__ == "__main__":
    main()
