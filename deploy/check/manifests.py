"""Strict validation of built Kubernetes manifests (`kustomize build` output):
built-in kinds against the Kubernetes schemas kubernetes-validate carries,
Prometheus Operator kinds (monitoring.coreos.com) against the CRDs of the
prometheus-operator release the Makefile pins. Unknown fields are errors in
both, as `kubectl apply --validate=strict` makes them; a kind with no schema
is an error too.

usage: manifests.py --kubernetes-version 1.33.0 --crds DIR MANIFEST...
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import kubernetes_validate  # type: ignore[import-untyped]
import yaml

OPERATOR_GROUP = "monitoring.coreos.com"


class Loader(yaml.SafeLoader):  # type: ignore[misc]
    """YAML 1.1's `=` value tag is a plain string in Kubernetes (the CRDs'
    enums of label-matching operators list it)."""


Loader.add_constructor(
    "tag:yaml.org,2002:value", lambda loader, node: loader.construct_scalar(node)
)


def closed(schema: Any) -> Any:
    """The CRD schema with unknown fields refused: every object that lists
    its properties, and does not keep unknown fields, allows no others."""
    if isinstance(schema, dict):
        out = {k: closed(v) for k, v in schema.items()}
        if (
            "properties" in out
            and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")
        ):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [closed(v) for v in schema]
    return schema


def crd_schemas(directory: Path) -> dict[tuple[str, str], Any]:
    """(apiVersion, kind) -> the served version's strict schema."""
    schemas = {}
    for path in sorted(directory.glob("*.yaml")):
        crd = yaml.load(path.read_text(), Loader=Loader)
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        for version in crd["spec"]["versions"]:
            schema = closed(version["schema"]["openAPIV3Schema"])
            schemas[(f"{group}/{version['name']}", kind)] = schema
    if not schemas:
        raise SystemExit(f"{directory}: no CRDs found")
    return schemas


def errors(doc: dict[str, Any], k8s_version: str, crds: dict[tuple[str, str], Any]) -> list[str]:
    api, kind = doc.get("apiVersion", ""), doc.get("kind", "")
    if api.split("/")[0] != OPERATOR_GROUP:
        try:
            kubernetes_validate.validate(doc, k8s_version, strict=True)
        except (kubernetes_validate.ValidationError, kubernetes_validate.SchemaNotFoundError) as e:
            return [str(e).splitlines()[0]]
        return []
    schema = crds.get((api, kind))
    if schema is None:
        return [f"no CRD schema for {api} {kind}"]
    found = [
        f"{'.'.join(str(p) for p in e.absolute_path) or '(root)'}: {e.message}"
        for e in jsonschema.Draft4Validator(schema).iter_errors(doc)
    ]
    # The CRD leaves metadata open; hold it to ObjectMeta as for any object.
    meta = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": doc.get("metadata", {})}
    return found + errors(meta, k8s_version, crds)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kubernetes-version", required=True)
    parser.add_argument("--crds", type=Path, required=True, help="directory of CRD YAML files")
    parser.add_argument("manifests", type=Path, nargs="+")
    args = parser.parse_args(argv)
    crds = crd_schemas(args.crds)
    failed = 0
    for path in args.manifests:
        try:
            docs = [d for d in yaml.load_all(path.read_text(), Loader=Loader) if d]
        except (OSError, yaml.YAMLError) as e:
            print(f"{path}: {e}")
            failed += 1
            continue
        if not docs:
            print(f"{path}: no objects")
            failed += 1
        for doc in docs:
            name = f"{path}: {doc.get('kind')} {doc.get('metadata', {}).get('name')}"
            for error in errors(doc, args.kubernetes_version, crds):
                print(f"{name}: {error}")
                failed += 1
        print(f"{path}: {len(docs)} objects checked")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
