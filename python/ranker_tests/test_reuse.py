"""`ranker train --reuse`: the newest version is kept when its fingerprint
(data files, settings, code, library versions) equals this run's, and a new
one is trained when any of them changed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ranker.cli import main
from ranker.export.fingerprint import Fingerprint, reusable

TINY_SCALE = "0.05"


def _versions(models: Path) -> list[str]:
    return sorted(p.name for p in (models / "tiny").iterdir() if not p.name.startswith("."))


def _train(data: Path, models: Path, *extra: str) -> int:
    where = ["--data", str(data), "--models", str(models), "--name", "tiny"]
    return main(["train", *where, "--no-tracking", "--quiet", "--reuse", *extra])


@pytest.mark.slow
def test_reuse_keeps_the_version_until_the_data_or_a_setting_changes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data, models = tmp_path / "log", tmp_path / "models"
    assert main(["data", "--out", str(data), "--scale", TINY_SCALE, "--seed", "3"]) == 0
    # The tiny log cannot pass the default release gate; no gate is a setting too.
    assert _train(data, models, "--no-gate") == 0
    (first,) = _versions(models)
    assert "training a new version: no version under this name yet" in capsys.readouterr().err

    assert _train(data, models, "--no-gate") == 0
    assert _versions(models) == [first]
    out = capsys.readouterr().out
    assert f"reusing {models / 'tiny' / first}: same data" in out

    # A setting changes: the release gate, here one that passes.
    gate = ["--min-trees", "1", "--min-gain-over-popular", "-1", "--max-loss-vs-serving", "1"]
    assert _train(data, models, *gate) == 0
    assert len(_versions(models)) == 2
    err = capsys.readouterr().err
    assert "setting release_gate.min_trees: unset -> 1" in err
    assert "data file" not in err
    second = _versions(models)[-1]
    recorded = json.loads((models / "tiny" / second / "metadata.json").read_text())
    assert recorded["training"]["fingerprint"]["settings"]["release_gate"]["min_trees"] == 1

    # A data file changes: another world written over the log.
    assert main(["data", "--out", str(data), "--scale", TINY_SCALE, "--seed", "4"]) == 0
    capsys.readouterr()
    assert _train(data, models, *gate) == 0
    assert len(_versions(models)) == 3
    err = capsys.readouterr().err
    assert "data file impressions.parquet changed" in err
    assert "setting" not in err

    # Unchanged again: the third version is kept.
    assert _train(data, models, *gate) == 0
    assert len(_versions(models)) == 3


def _fingerprint(**changes: object) -> Fingerprint:
    fields: dict[str, object] = {
        "data": {"impressions.parquet": "a" * 64},
        "settings": {"tune_trials": 0, "release_gate": {"min_trees": 20}},
        "code_sha256": "c" * 64,
        "libraries": {"lightgbm": "4.7.0"},
    }
    return Fingerprint(**(fields | changes))  # type: ignore[arg-type]


def _version_with(tmp_path: Path, recorded: dict[str, object] | None) -> Path:
    version = tmp_path / "v1"
    version.mkdir()
    training = {} if recorded is None else {"fingerprint": recorded}
    (version / "metadata.json").write_text(json.dumps({"training": training}))
    return version


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"data": {"impressions.parquet": "b" * 64}}, "data file impressions.parquet changed"),
        ({"data": {}}, "data file impressions.parquet removed"),
        (
            {"settings": {"tune_trials": 5, "release_gate": {"min_trees": 20}}},
            "setting tune_trials: 0 -> 5",
        ),
        (
            {"settings": {"tune_trials": 0, "release_gate": {"min_trees": 21}}},
            "setting release_gate.min_trees: 20 -> 21",
        ),
        ({"code_sha256": "d" * 64}, "the ranker code changed"),
        ({"libraries": {"lightgbm": "4.8.0"}}, 'library lightgbm: "4.7.0" -> "4.8.0"'),
    ],
)
def test_each_part_of_the_fingerprint_decides(
    tmp_path: Path, change: dict[str, object], reason: str
) -> None:
    version = _version_with(tmp_path, _fingerprint().to_json())
    assert reusable(version, _fingerprint()).version == version
    decision = reusable(version, _fingerprint(**change))
    assert decision.version is None
    assert decision.reason == f"since {version}: {reason}"


def test_a_version_without_a_fingerprint_is_not_reused(tmp_path: Path) -> None:
    version = _version_with(tmp_path, None)
    decision = reusable(version, _fingerprint())
    assert decision.version is None
    assert "records no training fingerprint" in decision.reason
    assert reusable(None, _fingerprint()).reason == "no version under this name yet"
