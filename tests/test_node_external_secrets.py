"""External Secrets on the node (mlflow_gitops/node/external_secrets.py), offline: its tool module
follows the pin, and the store that stands in for Vault is the one the homelab's ExternalSecrets
read, holding every key and property they ask for."""

from __future__ import annotations

import copy
import json
import re

import pytest

from mlflow_gitops.node import external_secrets, homelab
from mlflow_gitops.podrunner.render import Render
from mlflow_gitops.versions import ROOT

TOOL = external_secrets.TOOL


def test_external_secrets_module_requires_the_pin_and_builds_the_controller_as_a_tool() -> None:
    gomod = (TOOL.directory / "go.mod").read_text()
    assert TOOL.required() == TOOL.version, (
        f"{TOOL.directory.relative_to(ROOT)}/go.mod requires {TOOL.module} {TOOL.required()}, "
        f"{TOOL.pin_key} is {TOOL.version}"
    )
    assert re.search(rf"^tool {re.escape(TOOL.package)}$", gomod, re.MULTILINE), gomod[:400]
    assert (TOOL.directory / "go.sum").exists()


def test_fake_store_has_the_homelab_store_name_and_every_key_and_property_its_external_secrets_read() -> None:
    render = homelab.render()
    held = external_secrets.remote_values(render)
    store = external_secrets.fake_store(render, held)
    refs = {(es["spec"]["secretStoreRef"]["kind"], es["spec"]["secretStoreRef"]["name"]) for es in render.find("ExternalSecret")}  # fmt: skip
    assert refs == {(store["kind"], store["metadata"]["name"])}
    data = {item["key"]: json.loads(item["value"]) for item in store["spec"]["provider"]["fake"]["data"]}
    for es in render.find("ExternalSecret"):
        for item in es["spec"]["data"]:
            ref = item["remoteRef"]
            assert data[ref["key"]][ref["property"]] == held[ref["key"]][ref["property"]], ref
    values = [v for props in held.values() for v in props.values()]
    assert len(set(values)) == len(values) and all(len(v) >= 32 for v in values)


def test_external_secrets_of_two_stores_are_refused_naming_both() -> None:
    render = homelab.render()
    objects = copy.deepcopy(render.objects)
    second = next(o for o in objects if o["kind"] == "ExternalSecret")
    second["spec"]["secretStoreRef"]["name"] = "other"
    with pytest.raises(ValueError, match=r"'other'.*'vault'|'vault'.*'other'"):
        external_secrets.store_ref(Render(render.path, objects))
