"""Stage 8, experiments: what the server logged per variant, joined with clicks
into the next training rows; the analysis that decides whether a variant won
(`analysis`, `report`); readers' preference between interleaved models
(`interleaving`); and promotion of a version that won."""

from ranker.experiments.exposure import read_exposures, training_rows, variant_counts
from ranker.experiments.interleaving import Preference, preference
from ranker.experiments.promote import promote

__all__ = [
    "Preference",
    "preference",
    "promote",
    "read_exposures",
    "training_rows",
    "variant_counts",
]
