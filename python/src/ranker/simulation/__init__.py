"""Stage: simulated readers of the news world use a real ranking server.

`readers` says who reads when and what the newsroom publishes meanwhile;
`run` drives the server (publish, rank, show, click, record) and writes what
happened; `truth` scores each served page under the readers' true utility,
which only a simulated world knows."""

from __future__ import annotations

from ranker.simulation.run import SimulationResult, simulate
from ranker.simulation.truth import true_ndcg

__all__ = ["SimulationResult", "simulate", "true_ndcg"]
