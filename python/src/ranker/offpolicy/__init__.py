"""Off-policy estimation on logged rankings: position bias from explored
pages or from an experiment's variants (intervention harvesting), ranking
estimators with intervals, and a reward model. Reading the server's
exposure log into these rows, and the `ranker evaluate --off-policy`
report, live with the experiments (`ranker.experiments.feedback`,
`ranker.experiments.offpolicy`)."""

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
    "logged_order_positions",
    "pbm",
    "positions_by",
    "snips",
]
