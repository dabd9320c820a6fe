"""Stage 3, training: query-grouped data, time splits, LightGBM lambdarank."""

from ranker.training.dataset import RankData, TimeSplit, time_split
from ranker.training.lambdarank import DEFAULT_PARAMS, Rounds, TrainResult, fit, train, tune

__all__ = [
    "DEFAULT_PARAMS",
    "RankData",
    "Rounds",
    "TimeSplit",
    "TrainResult",
    "fit",
    "time_split",
    "train",
    "tune",
]
