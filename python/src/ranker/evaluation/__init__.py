"""Stage 4, evaluation: ranking metrics and the offline report on held-out time."""

from ranker.evaluation.report import Evaluation, evaluate, summary_table, write_report

__all__ = ["Evaluation", "evaluate", "summary_table", "write_report"]
