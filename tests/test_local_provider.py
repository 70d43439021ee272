"""The local provider: a real sentence-transformers model on the CPU, no network."""

import importlib.util
import io
import os

import numpy as np
import pytest
from django.core.management import CommandError, call_command

from embeddings.backfill.preflight import vector_column_dimensions
from embeddings.exceptions import FatalProviderError
from embeddings.models import Clip
from tests.support.clips import make_clips
from tests.support.commands import backfill
from tests.support.database import restore_migrated_column

if importlib.util.find_spec("sentence_transformers") is None:
    if os.environ.get("CI"):
        raise RuntimeError("CI needs the local extra: pip install -e '.[local]'")
    pytest.skip("the local extra is not installed", allow_module_level=True)

from embeddings.providers.local import LocalProvider

TEXTS = [
    "Title: insane 1v4 clutch on Ascent. Broadcaster: tenz. Game: Valorant",
    "Title: Pudge hook of the year. Broadcaster: gorgc. Game: Dota 2",
    "Title: chat can't believe this speedrun skip. Broadcaster: simply. Game: Minecraft",
]


@pytest.fixture(scope="module")
def provider() -> LocalProvider:
    return LocalProvider(model="all-MiniLM-L6-v2", dimensions=384)


def test_it_makes_unit_vectors_of_the_model_size(provider):
    response = provider.embed(TEXTS)

    assert response.vectors.shape == (3, 384)
    assert response.vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(response.vectors, axis=1), 1.0, rtol=1e-5)
    assert response.prompt_tokens > 0


def test_it_is_deterministic_and_batching_does_not_change_a_vector(provider):
    together = provider.embed(TEXTS).vectors
    alone = np.vstack([provider.embed([text]).vectors for text in TEXTS])

    np.testing.assert_allclose(together, alone, atol=1e-5)
    np.testing.assert_allclose(provider.embed(TEXTS).vectors, together, atol=1e-6)


def test_similar_texts_are_closer_than_unrelated_ones(provider):
    clutch, hook, _ = provider.embed(TEXTS).vectors
    (query,) = provider.embed(["Valorant clutch round"]).vectors

    assert float(query @ clutch) > float(query @ hook)


def test_a_size_other_than_the_model_size_is_refused_with_the_remedy():
    with pytest.raises(FatalProviderError, match="EMBEDDING_DIMENSIONS=384"):
        LocalProvider(model="all-MiniLM-L6-v2", dimensions=768)


def test_an_unknown_model_name_is_refused_not_downloaded():
    with pytest.raises(FatalProviderError, match="local model directory"):
        LocalProvider(model="intfloat/e5-large-v2", dimensions=1024)


@pytest.mark.django_db(transaction=True)
def test_the_backfill_with_the_local_provider_after_resizing_the_column(settings):
    settings.EMBEDDING_PROVIDER = "local"
    settings.EMBEDDING_MODEL = "all-MiniLM-L6-v2"
    settings.EMBEDDING_DIMENSIONS = 384
    make_clips(20)

    with pytest.raises(CommandError, match="resize_embeddings") as err:
        backfill()
    assert err.value.returncode == 2

    try:
        # A switch of size: it embeds every live clip with the new size itself.
        output = io.StringIO()
        call_command("resize_embeddings", "--noinput", stdout=output)
        assert vector_column_dimensions() == 384
        assert "embedded 20" in output.getvalue()

        output = backfill()

        assert "Found 0 clips to process" in output
        assert "rate limiter: unlimited" in output
        clip = Clip.objects.with_text().first()
        (expected,) = (
            LocalProvider(model="all-MiniLM-L6-v2", dimensions=384).embed([clip.text]).vectors
        )
        np.testing.assert_allclose(np.asarray(clip.embedding), expected, atol=1e-5)
    finally:
        restore_migrated_column()
    assert vector_column_dimensions() == 768
