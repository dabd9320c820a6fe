"""Article embeddings: a pretrained text-embedding model's vectors of the
titles, computed once per title (cached by content hash) and stored beside
the click log for the semantic features."""

from ranker.embeddings.encoder import (
    DEFAULT_ENCODER,
    EmbeddingsUnavailable,
    Encoder,
    load_encoder,
)
from ranker.embeddings.store import (
    EMBEDDINGS_FILE,
    EmbeddingRun,
    embed_articles,
    read_embeddings,
)

__all__ = [
    "DEFAULT_ENCODER",
    "EMBEDDINGS_FILE",
    "EmbeddingRun",
    "EmbeddingsUnavailable",
    "Encoder",
    "embed_articles",
    "load_encoder",
    "read_embeddings",
]
