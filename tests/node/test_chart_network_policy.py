"""The chart's own NetworkPolicies enforced live: the homelab release (tests/node/release.py) with
kube-router (mlflow_gitops.node.kube_router) enforcing them on the one-node cluster.

The pairs are the offline policy tests' (tests/test_network_policy.py: ALLOWED, DENIED and the
labels of their ends). A pair is probed live from a busybox pod (the render's busybox image, OpenBSD
nc) carrying its source's namespace and labels, against the real pod of its destination (server,
PostgreSQL instance, CoreDNS), once before kube-router starts (the path itself works) and once with
it enforcing. Sources a controller would adopt (a pod labelled as the server, the PostgreSQL
instance or the operator) are not imitated: the real ones show those pairs, as the server's new
connections to PostgreSQL and DNS after a restart and the operator's reconciliation of a recreated
instance, which itself talks to the API server. Clients in a namespace labelled as
`networkPolicy.clients` admits reach the Service; clients in an unlabelled one are refused.

Run by `make node-test` (marked `node`, outside `make test`).
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from mlflow_gitops.node import api, dns, homelab, render_images
from mlflow_gitops.node.kube_router import KubeRouter
from mlflow_gitops.node.node import Node
from mlflow_gitops.podrunner.base import NAMESPACE
from mlflow_gitops.podrunner.render import Render
from tests.node import release
from tests.node.conftest import SUMMARY
from tests.node.release import timed
from tests.node.test_helm_install import new_ready_pod, server_selector
from tests.test_network_policy import ALLOWED, DENIED, endpoints

pytestmark = [pytest.mark.node, pytest.mark.upstream]

UNLABELLED = "mlflow-unlabelled-client"
# Sources imitated by a probe pod; the others are real pods (or outside the cluster).
IMITATED = ("gateway", "other-gateway", "smoke-test", "neighbour", "stranger")
ATTEMPTS = 6  # a refused probe tries this often (3 s timeout, 1 s apart) before it gives up
HTTP_ATTEMPTS = 30  # the admitted client's REST call, retried while the server comes back

Pair = tuple[str, str, int, str]


@pytest.fixture(scope="module")
def enforced(node: Node) -> Iterator[dict[str, Any]]:
    """The release installed, the probes' namespaces made, the first (unenforced) probe round run;
    then kube-router enforcing the chart's policies for the module."""
    client = node.client
    router = KubeRouter(node)
    try:
        release.install(node)
        release.client_namespace(client)
        for name in ("network", UNLABELLED):
            namespace(client, name)
        targets = destinations(client)
        before = timed(
            "network policy: probes without enforcement", lambda: probe_round(client, "open", targets)
        )
        calls = timed(
            "network policy: Service calls without enforcement", lambda: service_call(client, "open")
        )
        timed("network policy: kube-router started", router.start)
        SUMMARY.append(f"network policy: kube-router {router.version()} enforcing the chart's policies")
        marker = "run through nw policy mlflow-"

        def programmed() -> tuple[bool, str]:
            lines = router.rules()
            return sum(marker in line for line in lines) >= 3, f"{len(lines)} kube-router rules"

        timed("network policy: chart policies programmed", lambda: api.wait_for("rules", programmed, 180))
        yield {"router": router, "targets": targets, "before": before, "calls": calls}
    finally:
        router.stop()
        for name in ("network", UNLABELLED):
            client.delete(f"/api/v1/namespaces/{name}")
        for pod in client.get("/api/v1/namespaces/default/pods?labelSelector=mlflow-probe%3Dtrue")["items"]:
            client.delete(f"/api/v1/namespaces/default/pods/{pod['metadata']['name']}")
        release.remove(node)


def namespace(client: api.Client, name: str) -> None:
    client.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})

    def service_account() -> tuple[bool, str]:  # pods are refused until the controller made it
        status, _ = client.request("GET", f"/api/v1/namespaces/{name}/serviceaccounts/default")
        return status == 200, f"GET serviceaccount default: {status}"

    api.wait_for(f"ServiceAccount default in {name}", service_account, 120)


def one_pod(client: api.Client, ns: str, selector: str) -> dict[str, Any]:
    path = f"/api/v1/namespaces/{ns}/pods?labelSelector={urllib.parse.quote(selector)}"
    found = [p for p in client.get(path)["items"] if not p["metadata"].get("deletionTimestamp")]
    assert len(found) == 1, f"{len(found)} pods match {selector} in {ns}"
    return found[0]


def destinations(client: api.Client) -> dict[str, tuple[str, set[int]]]:
    """Each live destination's pod IP and the ports its containers declare."""
    cluster = release.cluster_name()
    pods = {
        "mlflow": one_pod(client, NAMESPACE, urllib.parse.unquote(server_selector(client))),
        "postgres": one_pod(client, NAMESPACE, f"cnpg.io/cluster={cluster},cnpg.io/podRole=instance"),
        "dns": one_pod(client, dns.NAMESPACE, ",".join(f"{k}={v}" for k, v in dns.LABELS.items())),
    }
    return {
        name: (
            pod["status"]["podIP"],
            {p["containerPort"] for c in pod["spec"]["containers"] for p in c.get("ports", [])},
        )
        for name, pod in pods.items()
    }


def shown(targets: dict[str, tuple[str, set[int]]]) -> tuple[list[Pair], list[Pair]]:
    """The offline pairs a probe pod can show: an imitated source, a live destination, a port it
    listens on (a closed port refuses with or without a policy)."""

    def live(pair: Pair) -> bool:
        src, dst, port, _ = pair
        return src in IMITATED and dst in targets and port in targets[dst][1]

    return [p for p in ALLOWED if live(p)], [p for p in DENIED if live(p)]


def script(checks: list[tuple[str, str, int, str]]) -> str:
    """Each check (label, host, port, protocol) in parallel; a line per check in the termination
    message: `<label> reached attempts=N` or `<label> refused attempts=N: <last error>`."""
    lines = [
        "check() {",
        "  n=0",
        f'  while [ "$n" -lt {ATTEMPTS} ]; do',
        "    n=$((n+1))",
        '    if [ "$4" = UDP ]; then out=$(timeout 5 nslookup kubernetes.default.svc.cluster.local "$2" 2>&1)',
        '    else out=$(nc -z -w 3 "$2" "$3" 2>&1); fi',
        '    if [ $? = 0 ]; then echo "$1 reached attempts=$n"; return; fi',
        "    sleep 1",
        "  done",
        '  echo "$1 refused attempts=$n: $(echo $out | tail -c 100)"',
        "}",
    ]
    # The image has no /tmp: the checks write their one line each (a single write) to one pipe.
    lines.append("(")
    lines += [f"  check '{label}' {host} {port} {protocol} &" for label, host, port, protocol in checks]
    lines += ["  wait", ") | tee /dev/termination-log"]
    return "\n".join(lines)


def probe_pod(name: str, ns: str, labels: dict[str, str], command: str) -> dict[str, Any]:
    container = {
        "name": "probe", "image": render_images.reference("chart-busybox"),
        "imagePullPolicy": "IfNotPresent", "command": ["sh", "-c", command],
    }  # fmt: skip
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "labels": {**labels, "mlflow-probe": "true"}},
        "spec": {"restartPolicy": "Never", "containers": [container], "terminationGracePeriodSeconds": 1},
    }


def run_pods(client: api.Client, pods: list[dict[str, Any]]) -> dict[str, str]:
    """Create the pods together, wait for all to finish; each one's termination message by name."""
    for pod in pods:
        client.create(pod)
    paths = {
        p["metadata"]["name"]: f"/api/v1/namespaces/{p['metadata']['namespace']}/pods/{p['metadata']['name']}"
        for p in pods
    }

    def finished() -> tuple[bool, str]:
        phases = {name: client.get(path).get("status", {}).get("phase") for name, path in paths.items()}
        return all(p in ("Succeeded", "Failed") for p in phases.values()), f"phases {phases}"

    api.wait_for("probe pods finished", finished, 600, 2)
    messages = {}
    for name, path in paths.items():
        status = client.get(path)["status"]
        messages[name] = status["containerStatuses"][0]["state"]["terminated"].get("message", "").strip()
        assert status["phase"] == "Succeeded", f"probe pod {name} {status['phase']}: {messages[name]}"
        client.delete(path)
    return messages


def label(pair: Pair) -> str:
    return "{}->{}:{}/{}".format(*pair)


def probe_round(
    client: api.Client, round_name: str, targets: dict[str, tuple[str, set[int]]]
) -> dict[str, str]:
    """Every shown pair, one probe pod per source; the outcome line of each pair by its label."""
    allowed, denied = shown(targets)
    ends = endpoints(list(yaml.safe_load_all(homelab.RENDER.read_text())))
    pods = []
    for src in sorted({p[0] for p in allowed + denied}):
        checks = [(label(p), targets[p[1]][0], p[2], p[3]) for p in allowed + denied if p[0] == src]
        end = ends[src]
        pods.append(probe_pod(f"{round_name}-{src}", end.namespace, end.labels, script(checks)))
    outcomes = {}
    for message in run_pods(client, pods).values():
        for line in message.splitlines():
            outcomes[line.split(" ", 1)[0]] = line
    SUMMARY.extend(f"network policy, {round_name}: {line}" for line in outcomes.values())
    return outcomes


def service_call(client: api.Client, round_name: str) -> dict[str, str]:
    """A REST call that reads the database (experiments/search), through the Service's DNS name, from
    a pod in the namespace the policy admits and one in an unlabelled namespace."""
    host = urllib.parse.urlsplit(release.tracking_uri(release_render())).netloc
    name, port = host.rsplit(":", 1)
    request = f"GET /api/2.0/mlflow/experiments/search?max_results=1 HTTP/1.0\\r\\nHost: {host}\\r\\n\\r\\n"
    command = (
        f"for n in $(seq {HTTP_ATTEMPTS}); do out=$(printf '{request}' | nc -w 5 {name} {port} 2>&1 | head -1);"
        ' case "$out" in *" 200 "*) break;; esac; sleep 2; done;'
        ' echo "attempts=$n status=$out" | tee /dev/termination-log'
    )
    pods = [
        probe_pod(f"{round_name}-admitted", release.CLIENT_NAMESPACE, {}, command),
        probe_pod(f"{round_name}-unlabelled", UNLABELLED, {}, command.replace(str(HTTP_ATTEMPTS), "5", 1)),
    ]
    found = run_pods(client, pods)
    SUMMARY.extend(f"network policy, {name}: {message}" for name, message in found.items())
    return {"admitted": found[f"{round_name}-admitted"], "unlabelled": found[f"{round_name}-unlabelled"]}


def release_render() -> Render:
    return Render.load(homelab.RENDER)


def test_the_pairs_the_policy_tests_deny_are_refused_live_and_the_allowed_ones_connect(
    node: Node, enforced: dict[str, Any]
) -> None:
    allowed, denied = shown(enforced["targets"])
    assert len(allowed) >= 2 and len(denied) >= 5, f"too few pairs shown live: {allowed} {denied}"
    before = enforced["before"]
    closed = [
        before.get(label(p), f"{label(p)} missing")
        for p in allowed + denied
        if " reached " not in before.get(label(p), "")
    ]
    assert not closed, f"without enforcement these pairs do not connect, so the path is broken: {closed}"
    after = timed(
        "network policy: probes with enforcement",
        lambda: probe_round(node.client, "enforced", enforced["targets"]),
    )
    refused = [after[label(p)] for p in allowed if " reached " not in after[label(p)]]
    assert not refused, f"pairs the policy tests allow are refused live: {refused}"
    let_in = [after[label(p)] for p in denied if " reached " in after[label(p)]]
    assert not let_in, f"pairs the policy tests deny connect live: {let_in}"


def test_a_client_in_a_namespace_the_policy_admits_reaches_the_service_and_an_unlabelled_one_is_refused(
    node: Node, enforced: dict[str, Any]
) -> None:
    opened = enforced["calls"]
    assert all(" 200 " in found for found in opened.values()), f"without enforcement: {opened}"
    found = timed(
        "network policy: Service calls with enforcement", lambda: service_call(node.client, "enforced")
    )
    assert " 200 " in found["admitted"], f"the admitted namespace's client was refused: {found['admitted']}"
    assert " 200 " not in found["unlabelled"], (
        f"the unlabelled namespace's client got in: {found['unlabelled']}"
    )


def test_with_enforcement_the_operator_heals_a_recreated_instance_and_a_new_server_reaches_postgresql(
    node: Node, enforced: dict[str, Any]
) -> None:
    """New connections only (kube-router lets established ones be): a new server pod (its DNS lookup
    and connections to PostgreSQL), a new instance (its instance manager reads the Cluster from the
    API server; the operator reads its status port 8000 to call the Cluster Ready)."""
    client, cluster = node.client, release.cluster_name()
    server_sel = server_selector(client)
    instance_sel = urllib.parse.quote(f"cnpg.io/cluster={cluster},cnpg.io/podRole=instance")
    (server,) = release.ready_pods(client, server_sel)
    (instance,) = release.ready_pods(client, instance_sel)
    client.delete(f"{release.PODS}/{server['metadata']['name']}")
    client.delete(f"{release.PODS}/{instance['metadata']['name']}")
    new = timed(
        "network policy: PostgreSQL instance recreated and Ready under enforcement",
        lambda: new_ready_pod(client, instance_sel, instance["metadata"]["uid"], "new instance Ready"),
    )
    timed(
        "network policy: Cluster Ready under enforcement",
        lambda: api.wait_for(
            f"Cluster {cluster} Ready", lambda: release.cluster_ready(client, cluster), 600, 2
        ),
    )
    name, ip = new["metadata"]["name"], new["status"]["podIP"]

    def reported() -> tuple[bool, str]:  # filled by the operator from the instance's status port
        state = client.get(f"{release.CLUSTERS}/{cluster}")["status"].get("instancesReportedState", {})
        mine = state.get(name, {})
        return mine.get("ip") == ip and bool(mine.get("timeLineID")) and mine.get("isPrimary"), f"{state}"

    timed(
        "network policy: operator read the new instance's status",
        lambda: api.wait_for("status", reported, 300, 2),
    )
    SUMMARY.append(f"network policy: instance {name} ({ip}) reported by the operator: {reported()[1]}")
    timed(
        "network policy: server recreated and Ready under enforcement",
        lambda: new_ready_pod(client, server_sel, server["metadata"]["uid"], "new server Ready"),
    )
    found = timed("network policy: Service call to the new server", lambda: service_call(client, "healed"))
    assert " 200 " in found["admitted"], f"the new server cannot answer from its database: {found}"
    router = enforced["router"]
    assert router.process is not None and router.process.poll() is None, router.tail()
