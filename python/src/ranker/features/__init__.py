"""Stage 2, features: the one specification (`spec`) and the polars pipeline
that builds training rows from a click log (`build`)."""
