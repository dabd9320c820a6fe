"""Standard learning-to-rank text data: LibSVM/SVMlight rows with `qid:`
(MSLR-WEB10K/30K, LETOR, Istella), or rows without qid and a `.query` sidecar
of group sizes (Yahoo, LightGBM's examples).

Features are named f1..fN after their 1-based column numbers. A feature absent
from a row is 0.0, as LightGBM reads these files itself.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from sklearn.datasets import load_svmlight_file

from ranker.training.dataset import RankData


def max_feature_index(path: Path) -> int:
    highest = 0
    with path.open() as f:
        for line in f:
            for token in line.split("#", 1)[0].split()[1:]:
                key, _, _ = token.partition(":")
                if key.isdigit():
                    highest = max(highest, int(key))
    return highest


def _first_bad_line(path: Path) -> int | None:
    """The number of the first line that is not `label [qid:q] index:value ...`."""
    with path.open() as f:
        for number, line in enumerate(f, start=1):
            tokens = line.split("#", 1)[0].split()
            if not tokens:
                continue
            try:
                float(tokens[0])
                for token in tokens[1:]:
                    key, sep, value = token.partition(":")
                    if not sep or not (key.isdigit() or key == "qid"):
                        return number
                    float(value)
            except ValueError:
                return number
    return None


def read_ltr(path: Path, n_features: int) -> RankData:
    """Rows of one file, grouped by qid or by `<path>.query`; a malformed
    file is refused naming its first bad line."""
    try:
        return _read_ltr(path, n_features)
    except ValueError as err:
        if str(err).startswith(str(path)):
            raise
        line = _first_bad_line(path)
        where = f"{path}:{line}" if line is not None else str(path)
        raise ValueError(f"{where}: {err}") from err


def _read_ltr(path: Path, n_features: int) -> RankData:
    """Rows of one file, grouped by qid or by `<path>.query`."""
    sidecar = path.with_name(path.name + ".query")
    has_qid = False
    with path.open() as f:
        for line in f:
            if line.strip() and not line.startswith("#"):
                has_qid = " qid:" in line
                break
    if has_qid:
        x, y, qid = load_svmlight_file(
            str(path), n_features=n_features, query_id=True, dtype=np.float32, zero_based=False
        )
        boundaries = np.flatnonzero(np.diff(qid)) + 1
        groups = np.diff(np.concatenate([[0], boundaries, [qid.size]]))
        if np.unique(qid).size != groups.size:
            raise ValueError(f"{path}: rows of a qid must be contiguous")
    elif sidecar.exists():
        x, y = load_svmlight_file(
            str(path), n_features=n_features, dtype=np.float32, zero_based=False
        )
        groups = np.loadtxt(sidecar, dtype=np.int64, ndmin=1)
        if int(groups.sum()) != y.size:
            raise ValueError(
                f"{sidecar}: group sizes sum to {int(groups.sum())}, {path} has {y.size} rows"
            )
    else:
        raise ValueError(f"{path}: rows have no qid: and there is no {sidecar.name}")
    return RankData(
        features=np.asarray(x.toarray(), np.float32),
        labels=np.asarray(y, np.float64),
        groups=np.asarray(groups, np.int64),
    )


def libsvm_feature_names(n: int) -> list[str]:
    return [f"f{i}" for i in range(1, n + 1)]
