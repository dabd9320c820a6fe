"""Stage 5, export: a trained booster becomes an immutable model version
directory (ONNX, LightGBM text, metadata, golden rows) that the Go server loads."""

from ranker.export.golden import GoldenRow, golden_matrix, read_golden
from ranker.export.onnx import ExportError, lgbm_scores, onnx_scores, onnx_session
from ranker.export.version import ExportResult, export_model

__all__ = [
    "ExportError",
    "ExportResult",
    "GoldenRow",
    "export_model",
    "golden_matrix",
    "lgbm_scores",
    "onnx_scores",
    "onnx_session",
    "read_golden",
]
