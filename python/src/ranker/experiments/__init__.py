"""Stage 8, experiments: what the server logged per variant, joined with clicks
into the next training rows, readers' preference between interleaved models,
and promotion of a version that won."""

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
