"""ranker: learning-to-rank for news personalization (features, training, export, client)."""

from ranker.features import CANDIDATE_FEATURES, CONTEXT_FEATURES, FEATURE_NAMES

__all__ = ["CANDIDATE_FEATURES", "CONTEXT_FEATURES", "FEATURE_NAMES"]
