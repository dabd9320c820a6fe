"""ranker: learning-to-rank for news personalization.

Subpackages follow the data flow, and each imports only the ones before it:
data, features, training, evaluation, export, gate (the release checks),
pipeline (which composes them),
serving (the client), experiments, cli.
"""

from ranker.features.spec import CANDIDATE_FEATURES, CONTEXT_FEATURES, FEATURE_NAMES

__all__ = ["CANDIDATE_FEATURES", "CONTEXT_FEATURES", "FEATURE_NAMES"]
