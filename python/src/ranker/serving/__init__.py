"""Stage 7, serving: the gRPC client for the Go ranking server, and the server as a process."""

from ranker.serving.client import RankerClient, TLSOptions, format_ranking, request_from_rows
from ranker.serving.history import LoadReport, load_history
from ranker.serving.process import ServerProcess, ort_library_path

__all__ = [
    "LoadReport",
    "RankerClient",
    "ServerProcess",
    "TLSOptions",
    "format_ranking",
    "load_history",
    "ort_library_path",
    "request_from_rows",
]
