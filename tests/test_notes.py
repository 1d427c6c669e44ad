"""NOTES.txt, what `helm install` prints, names only the objects the values render."""

from __future__ import annotations

import itertools
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml

from mlflow_gitops import chart
from tests.support.manifests import Obj

HOMELAB = chart.VALUES / "homelab.yaml"
# How NOTES.txt names each kind it may mention: "<label> <name>".
LABELS = {"Cluster": "Cluster", "PersistentVolumeClaim": "claim", "HTTPRoute": "HTTPRoute"}
CLIENT_LABEL = "mlflow.daviestechlabs.io/client"


def render_with_notes(overrides: dict[str, Any]) -> tuple[list[Obj], str]:
    """This chart's objects and its NOTES.txt, rendered with the homelab values and `overrides`.

    `helm template` leaves NOTES.txt out: in a copy of the chart it becomes a named template that a
    probe ConfigMap carries."""
    with tempfile.TemporaryDirectory() as work:
        copy = chart.own_chart_copy(Path(work))
        notes = (copy / "templates" / "NOTES.txt").read_text()
        (copy / "templates" / "_notes_probe.tpl").write_text(
            f'{{{{- define "notes-probe" -}}}}{notes}{{{{- end -}}}}'
        )
        (copy / "templates" / "notes-probe.yaml").write_text(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: notes-probe\n"
            'data:\n  notes: {{ include "notes-probe" . | toJson }}\n'
        )
        (copy.parent / "overrides.yaml").write_text(yaml.safe_dump(overrides))
        objects = chart.template([HOMELAB, copy.parent / "overrides.yaml"], chart=copy).documents
    (probe,) = [o for o in objects if o["metadata"]["name"] == "notes-probe"]
    return [o for o in objects if o is not probe], probe["data"]["notes"]


def named(text: str) -> set[str]:
    """The `<label> <name>` pairs a text names."""
    words = text.replace(":", " ").replace(",", " ").split()
    return {f"{w} {n}" for w, n in itertools.pairwise(words) if w in LABELS.values()}


def as_named(objects: list[Obj]) -> set[str]:
    return {f"{LABELS[o['kind']]} {o['metadata']['name']}" for o in objects if o["kind"] in LABELS}


CASES = {
    "homelab": {},
    "no-database": {
        "postgres": {"enabled": False},
        "mlflow": {"backendStore": {"postgres": {"enabled": False}}},
    },
    "no-claim": {"artifacts": {"enabled": False}},
    "no-route": {"httpRoute": {"enabled": False}, "networkPolicy": {"gateway": {"namespace": ""}}},
    "no-route-no-clients": {
        "httpRoute": {"enabled": False},
        "networkPolicy": {
            "gateway": {"namespace": ""},
            # A null label removes the homelab's (an empty map would merge with it).
            "clients": {"namespaces": [], "namespaceSelector": {"matchLabels": {CLIENT_LABEL: None}}},
        },
    },
    "not-kept": {"keepOnUninstall": False},
}


@pytest.mark.parametrize("overrides", CASES.values(), ids=CASES.keys())
def test_notes_name_only_rendered_objects(overrides: dict[str, Any]) -> None:
    objects, notes = render_with_notes(overrides)
    assert named(notes) <= as_named(objects), notes
    kept = [
        o for o in objects if o["metadata"].get("annotations", {}).get("helm.sh/resource-policy") == "keep"
    ]
    uninstall = "\n".join(line for line in notes.splitlines() if "helm uninstall" in line)
    assert named(uninstall) == as_named(kept), notes
    if not any(o["kind"] == "HTTPRoute" for o in objects):
        assert "gateway" not in notes.lower(), notes
    if not any(o["kind"] == "Cluster" for o in objects):
        assert "Database:" not in notes, notes
