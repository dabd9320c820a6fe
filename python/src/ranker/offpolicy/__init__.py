"""Off-policy evaluation from the server's exposure log: logged feedback
with propensities, position bias from explored pages, ranking estimators,
and the `ranker evaluate --off-policy` report."""

from ranker.offpolicy.estimators import (
    ESTIMATORS,
    Estimate,
    Inputs,
    difference,
    dr,
    estimate,
    iips,
    logged_order_positions,
    pbm,
    positions_by,
    snips,
)
from ranker.offpolicy.logged import logged_feedback
from ranker.offpolicy.position_bias import (
    PositionBias,
    TooLittleExploration,
    estimate_position_bias,
)

__all__ = [
    "ESTIMATORS",
    "Estimate",
    "Inputs",
    "PositionBias",
    "TooLittleExploration",
    "difference",
    "dr",
    "estimate",
    "estimate_position_bias",
    "iips",
    "logged_feedback",
    "logged_order_positions",
    "pbm",
    "positions_by",
    "snips",
]
