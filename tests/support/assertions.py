"""The promise most tests end by checking: every live clip holds the right vector."""

import numpy as np

from embeddings.app_settings import embedding_settings
from embeddings.models import Clip
from tests.support.commands import finish, start_backfill
from tests.support.openai_server import FakeOpenAIServer, expected_vector


def assert_every_live_clip_right(model: str | None = None, *, dimensions: int = 768) -> None:
    """Every live clip has the test server's vector of its present text, made by `model`.

    `model` defaults to the configured one, which is what an in-process run stores; pass a
    subprocess's EMBEDDING_MODEL to check what that run stored.
    """
    if model is None:
        model = embedding_settings().model
    texts = dict(Clip.objects.live().with_text().values_list("id", "text"))
    for clip in Clip.objects.live():
        assert clip.embedding is not None, f"clip {clip.id} has no vector"
        assert clip.embedding_model == model, f"clip {clip.id}: {clip.embedding_model!r}"
        assert clip.embedding_text_hash == clip.text_hash, f"clip {clip.id} has a stale vector"
        np.testing.assert_allclose(
            np.asarray(clip.embedding),
            expected_vector(texts[clip.id], dimensions),
            rtol=1e-6,
            err_msg=f"clip {clip.id} has a wrong vector",
        )


def a_later_run_finishes_the_job(env: dict[str, str], server: FakeOpenAIServer) -> None:
    """The promise after any failure: a plain run leaves every live clip right."""
    server.update_faults(latency_ms=0)
    code, output = finish(start_backfill(env))
    assert code == 0, output
    assert_every_live_clip_right(env["EMBEDDING_MODEL"])
