"""The package layout: subpackages by stage, imports that only point back
along the data flow, a wheel that ships the library alone, and a client
distribution (ranker-client) that needs nothing of the training side."""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "src"
CLIENT = SRC.parent / "client"
# The data flow: a module may import its own stage and the ones before it.
STAGES = (
    "data",
    "embeddings",
    "features",
    "offpolicy",
    "training",
    "evaluation",
    "export",
    "gate",
    "tracking",
    "pipeline",
    "serving",
    "experiments",
    "simulation",
    "cli",
)
# Shared by every stage (none: the generated protobuf code is in the
# ranker_client distribution, which any stage may import).
ANY_STAGE: tuple[str, ...] = ()


def _stage_of(module: str) -> str:
    """ranker.<stage>[...] -> <stage>; the package root is its public API."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _modules(src: Path) -> list[tuple[str, Path]]:
    out = []
    for path in sorted((src / "ranker").rglob("*.py")):
        relative = path.relative_to(src).with_suffix("")
        parts = relative.parts[:-1] if relative.name == "__init__" else relative.parts
        out.append((".".join(parts), path))
    return out


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return {name for name in found if name == "ranker" or name.startswith("ranker.")}


def layout_violations(src: Path) -> tuple[list[str], int]:
    """Modules outside the stages, and imports of a later stage (or of the
    package root, which re-exports a later stage); with the number of
    imports between stages checked."""
    problems, checked = [], 0
    for module, path in _modules(src):
        stage = _stage_of(module)
        if stage not in ("", *STAGES, *ANY_STAGE):
            problems.append(f"{path}: {stage!r} is not a stage")
            continue
        if stage in ("", *ANY_STAGE):
            continue
        for imported in _imports(path):
            target = _stage_of(imported)
            if target in ANY_STAGE:
                continue
            checked += 1
            if target == "":
                problems.append(f"{module} imports the package root; import the stage")
            elif target not in STAGES:
                problems.append(f"{module} imports {imported}, which is in no stage")
            elif STAGES.index(target) > STAGES.index(stage):
                problems.append(f"{module} ({stage}) imports {imported}, a later stage")
    return problems, checked


def test_no_module_imports_a_later_stage() -> None:
    problems, checked = layout_violations(SRC)
    assert problems == []
    assert checked > 30  # the walk saw the real imports


def test_the_check_catches_a_backward_import_and_a_stray_module(tmp_path: Path) -> None:
    package = tmp_path / "ranker"
    for stage in ("features", "serving", "utils"):
        (package / stage).mkdir(parents=True)
        (package / stage / "__init__.py").write_text("")
    (package / "features" / "spec.py").write_text("from ranker.serving.client import Client\n")
    (package / "serving" / "client.py").write_text("from ranker.features.spec import X\n")
    problems, checked = layout_violations(tmp_path)
    assert checked == 2
    assert len(problems) == 2, problems
    assert "ranker.features.spec (features) imports ranker.serving.client" in problems[0]
    assert "'utils' is not a stage" in problems[1]


def test_the_log_schema_loads_without_the_synthetic_world() -> None:
    """A publisher's own click log needs the schemas, not the generator."""
    code = (
        "import sys, ranker.data.schema, ranker.features.spec; "
        "assert 'ranker.data.world' not in sys.modules, 'the generator was imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.slow
def test_the_wheel_ships_the_library_and_nothing_else(tmp_path: Path) -> None:
    # Built from a copy: setuptools leaves a build/ directory beside the sources.
    project = tmp_path / "project"
    project.mkdir()
    shutil.copy(SRC.parent / "pyproject.toml", project)
    shutil.copytree(SRC, project / "src", ignore=shutil.ignore_patterns("*.egg-info"))
    out = tmp_path / "dist"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "-w",
            str(out),
            str(project),
        ],
        check=True,
    )
    (wheel,) = out.glob("ranker-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top = {name.split("/")[0] for name in names}
    assert top == {"ranker", next(t for t in top if t.endswith(".dist-info"))}
    assert "ranker/py.typed" in names
    for stage in STAGES[:-1]:
        assert any(n.startswith(f"ranker/{stage}") for n in names), stage
    assert not any("benchmark" in n or "test" in n.split("/")[-1] for n in names), names


def _top_level_imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


def test_the_client_imports_grpc_and_protobuf_alone() -> None:
    """A backend service installs ranker-client without the training stack."""
    allowed = {"grpc", "google", "ranker_client"} | set(sys.stdlib_module_names)
    modules = sorted((CLIENT / "src" / "ranker_client").rglob("*.py"))
    assert len(modules) >= 5, modules
    for path in modules:
        extra = _top_level_imports(path) - allowed
        assert not extra, f"{path} imports {sorted(extra)}"
    assert _top_level_imports(SRC / "ranker" / "serving" / "client.py") >= {"ranker_client"}


def _requirement(pyproject: Path, name: str) -> str:
    pattern = rf'^\s*"{re.escape(name)}([=<>!~][^"]*)",'
    found = re.findall(pattern, pyproject.read_text(), re.MULTILINE)
    assert len(found) == 1, (pyproject, name, found)
    return str(found[0])


def test_the_training_package_pins_the_client_it_ships_with() -> None:
    version = re.search(r'^version = "([^"]+)"', (CLIENT / "pyproject.toml").read_text(), re.M)
    assert version is not None
    assert _requirement(SRC.parent / "pyproject.toml", "ranker-client") == f"=={version[1]}"
    # The client declares ranges, for services that bring their own versions;
    # the training environment's exact pins fall inside them.
    for name in ("grpcio", "protobuf"):
        low = _requirement(CLIENT / "pyproject.toml", name).split(",")[0].removeprefix(">=")
        pinned = _requirement(SRC.parent / "pyproject.toml", name).removeprefix("==")
        as_tuple = [tuple(int(p) for p in v.split(".")) for v in (low, pinned)]
        assert as_tuple[0] <= as_tuple[1], (name, low, pinned)
