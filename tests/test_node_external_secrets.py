"""External Secrets on the node (mlflow_gitops/node/external_secrets.py), offline: the store that stands in for Vault is the one the homelab's ExternalSecrets
read, holding every key and property they ask for."""

from __future__ import annotations

import copy
import json

import pytest

from mlflow_gitops.node import external_secrets, homelab
from mlflow_gitops.podrunner.render import Render

TOOL = external_secrets.TOOL


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
