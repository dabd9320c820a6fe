"""What made a model version, as a fingerprint recorded in its metadata.json
(`training.fingerprint`): a hash of each input file, the training settings,
a hash of this package's code and the versions of the libraries that train
and export. Training again with an equal fingerprint would give the same
model, so `ranker train --reuse` keeps the newest version when they match.
"""

from __future__ import annotations

import hashlib
import json
import platform
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Any

from ranker.export.artifact import METADATA_JSON, file_sha256

# The libraries whose versions decide the trees, their export and their
# checks; metadata.json lists them as library_versions.
LIBRARIES = ("lightgbm", "onnxmltools", "onnxruntime", "onnx", "polars", "numpy")
# This package: every module that builds features, trains or exports.
_PACKAGE_DIR = Path(__file__).resolve().parents[1]


def library_versions() -> dict[str, str]:
    return {name: package_version(name) for name in LIBRARIES} | {
        "python": platform.python_version()
    }


def code_sha256(package_dir: Path = _PACKAGE_DIR) -> str:
    """SHA-256 over the package's Python sources (path and content), so an
    edit changes it and a commit that touches only docs or tests does not."""
    digest = hashlib.sha256()
    for path in sorted(package_dir.rglob("*.py")):
        digest.update(path.relative_to(package_dir).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()


def _plain(value: Any) -> Any:
    """As JSON gives it back (tuples become lists, keys sorted), so a
    fingerprint read from metadata.json compares equal to a fresh one."""
    return json.loads(json.dumps(value, sort_keys=True))


@dataclass(frozen=True)
class Fingerprint:
    # Input file name -> SHA-256 of its content.
    data: dict[str, str]
    settings: dict[str, Any]
    code_sha256: str
    libraries: dict[str, str]

    def to_json(self) -> dict[str, Any]:
        return {
            "data": self.data,
            "settings": self.settings,
            "code_sha256": self.code_sha256,
            "libraries": self.libraries,
        }

    def differences(self, recorded: Mapping[str, Any]) -> list[str]:
        """What differs from a fingerprint read from metadata.json, in words
        (empty when equal)."""
        out = []
        then_data = recorded.get("data", {})
        for name in sorted(set(self.data) | set(then_data)):
            if name not in then_data:
                out.append(f"data file {name} added")
            elif name not in self.data:
                out.append(f"data file {name} removed")
            elif self.data[name] != then_data[name]:
                out.append(f"data file {name} changed")
        for kind, now, then in (
            ("setting", _flat(self.settings), _flat(recorded.get("settings", {}))),
            ("library", self.libraries, recorded.get("libraries", {})),
        ):
            for key in sorted(set(now) | set(then)):
                if now.get(key, _UNSET) != then.get(key, _UNSET):
                    out.append(f"{kind} {key}: {_show(then, key)} -> {_show(now, key)}")
        if self.code_sha256 != recorded.get("code_sha256"):
            out.append("the ranker code changed")
        return out


_UNSET = object()


def _flat(settings: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested settings as dotted keys, so a change names the one value
    (release_gate.min_trees) rather than the whole group."""
    out: dict[str, Any] = {}
    for key, value in settings.items():
        if isinstance(value, Mapping) and value:
            out |= _flat(value, f"{prefix}{key}.")
        else:
            out[f"{prefix}{key}"] = value
    return out


def _show(values: Mapping[str, Any], key: str) -> str:
    return json.dumps(values[key], sort_keys=True) if key in values else "unset"


def fingerprint(files: Sequence[Path], settings: Mapping[str, Any]) -> Fingerprint:
    return Fingerprint(
        data={path.name: file_sha256(path) for path in files},
        settings=_plain(dict(settings)),
        code_sha256=code_sha256(),
        libraries=library_versions(),
    )


@dataclass(frozen=True)
class Reuse:
    """The newest version when its fingerprint equals this one (None
    otherwise), and why, in one line."""

    version: Path | None
    reason: str


def reusable(newest: Path | None, current: Fingerprint) -> Reuse:
    """Whether `newest` (the version serving under a name, None if there is
    none) was trained from what `current` describes."""
    if newest is None:
        return Reuse(None, "no version under this name yet")
    metadata = json.loads((newest / METADATA_JSON).read_text())
    recorded = metadata.get("training", {}).get("fingerprint")
    if not isinstance(recorded, dict):
        return Reuse(None, f"the newest version, {newest}, records no training fingerprint")
    differences = current.differences(recorded)
    if differences:
        return Reuse(None, f"since {newest}: " + "; ".join(differences))
    return Reuse(
        newest,
        f"same data ({', '.join(sorted(current.data))}), settings, code and library versions "
        "as when it was trained",
    )
