"""The chart's own NetworkPolicies enforced live: the homelab release (tests/node/release.py) with
kube-router (mlflow_gitops.node.kube_router) enforcing them on the one-node cluster from before
`helm install`, so the Cluster bootstraps under them: CloudNativePG's initdb Job pod (labelled
`cnpg.io/jobRole`, not as an instance) must reach the API server. A `helm upgrade` to two instances
then has its join Job pod copy the primary under them too.

The pairs are the offline policy tests' (tests/test_network_policy.py: ALLOWED, DENIED and the
labels of their ends). A pair is probed live from a probe pod (tests/node/probes.py) carrying its
source's namespace and labels, against the real pod of its destination (server, PostgreSQL
instance, CoreDNS) or the API server's Service, once with kube-router stopped and its rules removed
(the control: the path itself works) and once with it enforcing, where a probe pod the default
deny isolates first waits until its isolation shows (kube-router programs a new pod a moment
late). Sources a controller would adopt (a pod labelled as the server, the PostgreSQL instance or
the operator) are not imitated: the real ones show those pairs, as the server's new connections to
PostgreSQL and DNS after a restart and the operator's reconciliation of a recreated instance, which
itself talks to the API server. A pod labelled as CloudNativePG's Job pods is imitated: the
operator takes its pods by owner reference, not by label. Clients in a namespace labelled as
`networkPolicy.clients` admits reach the Service; clients in an unlabelled one are refused.

Run by `make node-test` (marked `node`, outside `make test`).
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import yaml
from kubernetes.client import ApiClient, CoreV1Api, V1Pod

from mlflow_gitops import chart
from mlflow_gitops.node import api, dns, homelab
from mlflow_gitops.node.kube_router import KubeRouter
from mlflow_gitops.node.node import Node
from mlflow_gitops.podrunner.base import NAMESPACE
from mlflow_gitops.podrunner.render import Render
from tests.node import kube, probes, release
from tests.node.conftest import SUMMARY
from tests.node.release import timed
from tests.node.test_helm_install import new_ready_pod, server_selector
from tests.test_network_policy import ALLOWED, DENIED, endpoints

pytestmark = [pytest.mark.node, pytest.mark.upstream]

UNLABELLED = "mlflow-unlabelled-client"
# Sources imitated by a probe pod; the others are real pods (or outside the cluster).
IMITATED = ("gateway", "other-gateway", "smoke-test", "neighbour", "stranger", "cnpg-job")
HTTP_ATTEMPTS = 30  # the admitted client's REST call, retried while the server comes back

Pair = tuple[str, str, int, str]


@pytest.fixture(scope="module")
def enforced(node: Node) -> Iterator[dict[str, Any]]:
    """kube-router enforcing from before `helm install`, so the Cluster bootstraps under the chart's
    policies (CloudNativePG's initdb Job pod included); then one probe round with kube-router
    stopped and its rules removed (the control: the paths themselves work), and enforcement again
    for the module."""
    client = node.client
    router = KubeRouter(node)
    try:
        timed("network policy: kube-router started before the install", router.start)
        SUMMARY.append(f"network policy: kube-router {router.version()} enforcing the chart's policies")
        enforcing_since = datetime.now(UTC).replace(microsecond=0)
        release.install(node)
        jobs = release.cnpg_jobs(client)
        SUMMARY.extend(f"network policy: CloudNativePG Job {role}: {job}" for role, job in jobs.items())
        timed("network policy: chart policies programmed", lambda: wait_programmed(router))
        release.client_namespace(client)
        for name in ("network", UNLABELLED):
            kube.namespace(client, name)
        targets = destinations(client)
        timed("network policy: kube-router stopped, its rules removed", router.stop)
        assert not router.rules() and not router.ipsets(), (router.rules(), router.ipsets())
        before = timed(
            "network policy: probes without enforcement",
            lambda: probe_round(client, "open", targets, gated=False),
        )
        calls = timed(
            "network policy: Service calls without enforcement", lambda: service_call(client, "open")
        )
        timed("network policy: kube-router started again", router.start)
        timed("network policy: chart policies programmed again", lambda: wait_programmed(router))
        yield {
            "router": router, "targets": targets, "before": before, "calls": calls,
            "enforcing_since": enforcing_since, "jobs": jobs,
        }  # fmt: skip
    finally:
        router.stop()
        core = CoreV1Api(client)
        for name in ("network", UNLABELLED):
            kube.absent(lambda name=name: core.delete_namespace(name))
        core.delete_collection_namespaced_pod("default", label_selector="mlflow-probe=true")
        release.remove(node)


def wait_programmed(router: KubeRouter) -> None:
    """kube-router's rules for the chart's policies (at least three) are in iptables."""
    marker = "run through nw policy mlflow-"

    def programmed() -> tuple[bool, str]:
        lines = router.rules()
        return sum(marker in line for line in lines) >= 3, f"{len(lines)} kube-router rules"

    api.wait_for("rules", programmed, 180)


def one_pod(client: ApiClient, ns: str, selector: str) -> V1Pod:
    listed = CoreV1Api(client).list_namespaced_pod(ns, label_selector=selector).items
    found = [p for p in listed if not p.metadata.deletion_timestamp]
    assert len(found) == 1, f"{len(found)} pods match {selector} in {ns}"
    return found[0]


def destinations(client: ApiClient) -> dict[str, tuple[str, set[int]]]:
    """Each live destination's pod IP and the ports its containers declare; the API server as the
    pods reach it, the `kubernetes` Service's address and port."""
    cluster = release.cluster_name()
    pods = {
        "mlflow": one_pod(client, NAMESPACE, server_selector(client)),
        "postgres": one_pod(client, NAMESPACE, f"cnpg.io/cluster={cluster},cnpg.io/podRole=instance"),
        "dns": one_pod(client, dns.NAMESPACE, ",".join(f"{k}={v}" for k, v in dns.LABELS.items())),
    }
    found = {
        name: (pod.status.pod_ip, {p.container_port for c in pod.spec.containers for p in c.ports or []})
        for name, pod in pods.items()
    }
    service = CoreV1Api(client).read_namespaced_service("kubernetes", "default").spec
    found["api-server"] = (service.cluster_ip, {p.port for p in service.ports})
    return found


def shown(targets: dict[str, tuple[str, set[int]]]) -> tuple[list[Pair], list[Pair]]:
    """The offline pairs a probe pod can show: an imitated source, a live destination, a port it
    listens on (a closed port refuses with or without a policy)."""

    def live(pair: Pair) -> bool:
        src, dst, port, _ = pair
        return src in IMITATED and dst in targets and port in targets[dst][1]

    return [p for p in ALLOWED if live(p)], [p for p in DENIED if live(p)]


def label(pair: Pair) -> str:
    return "{}->{}:{}/{}".format(*pair)


def probe_round(
    client: ApiClient, round_name: str, targets: dict[str, tuple[str, set[int]]], gated: bool
) -> dict[str, str]:
    """Every shown pair, one probe pod per source; the outcome line of each pair by its label, and
    `isolation:<source>` for each source in the release's namespace (whose egress the default deny
    isolates): gated, the wait for its isolation; ungated, the sentinel probed as a pair."""
    allowed, denied = shown(targets)
    ends = endpoints(list(yaml.safe_load_all(homelab.RENDER.read_text())))
    pods = []
    for src in sorted({p[0] for p in allowed + denied}):
        checks = [(label(p), targets[p[1]][0], p[2], p[3]) for p in allowed + denied if p[0] == src]
        end, gate = ends[src], None
        if end.namespace == NAMESPACE:
            gate = f"isolation:{src}"
            if not gated:
                checks.append((gate, *probes.SENTINEL, "TCP"))
        command = probes.script(checks, gate if gated else None)
        pods.append(probes.probe_pod(f"{round_name}-{src}", end.namespace, end.labels, command))
    outcomes = {}
    for message in probes.run_pods(client, pods).values():
        for line in message.splitlines():
            outcomes[line.split(" ", 1)[0]] = line
    SUMMARY.extend(f"network policy, {round_name}: {line}" for line in outcomes.values())
    return outcomes


def service_call(client: ApiClient, round_name: str) -> dict[str, str]:
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
        probes.probe_pod(f"{round_name}-admitted", release.CLIENT_NAMESPACE, {}, command),
        probes.probe_pod(
            f"{round_name}-unlabelled", UNLABELLED, {}, command.replace(str(HTTP_ATTEMPTS), "5", 1)
        ),
    ]
    found = probes.run_pods(client, pods)
    SUMMARY.extend(f"network policy, {name}: {message}" for name, message in found.items())
    return {"admitted": found[f"{round_name}-admitted"], "unlabelled": found[f"{round_name}-unlabelled"]}


def release_render() -> Render:
    return Render.load(homelab.RENDER)


def test_the_pairs_the_policy_tests_deny_are_refused_live_and_the_allowed_ones_connect(
    node: Node, enforced: dict[str, Any]
) -> None:
    allowed, denied = shown(enforced["targets"])
    assert len(allowed) >= 2 and len(denied) >= 5, f"too few pairs shown live: {allowed} {denied}"
    job_pairs = {("cnpg-job", "api-server", 443, "TCP"), ("cnpg-job", "dns", 53, "UDP")}
    assert job_pairs <= set(allowed), f"the Job pods' pairs are not shown live: {allowed}"
    before = enforced["before"]
    isolation = sorted(k for k in before if k.startswith("isolation:"))
    assert isolation, f"no source in the release's namespace probed: {sorted(before)}"
    closed = [
        before.get(key, f"{key} missing")
        for key in [label(p) for p in allowed + denied] + isolation
        if " reached " not in before.get(key, "")
    ]
    assert not closed, f"without enforcement these pairs do not connect, so the path is broken: {closed}"
    after = timed(
        "network policy: probes with enforcement",
        lambda: probe_round(node.client, "enforced", enforced["targets"], gated=True),
    )
    open_egress = [
        after.get(key, f"{key} missing") for key in isolation if " refused " not in after.get(key, "")
    ]
    assert not open_egress, f"these probe pods' egress was never isolated: {open_egress}"
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
    instance_sel = f"cnpg.io/cluster={cluster},cnpg.io/podRole=instance"
    (server,) = release.ready_pods(client, server_sel)
    (instance,) = release.ready_pods(client, instance_sel)
    core = CoreV1Api(client)
    core.delete_namespaced_pod(server.metadata.name, NAMESPACE)
    core.delete_namespaced_pod(instance.metadata.name, NAMESPACE)
    new = timed(
        "network policy: PostgreSQL instance recreated and Ready under enforcement",
        lambda: new_ready_pod(client, instance_sel, instance.metadata.uid, "new instance Ready"),
    )
    timed(
        "network policy: Cluster Ready under enforcement",
        lambda: api.wait_for(
            f"Cluster {cluster} Ready", lambda: release.cluster_ready(client, cluster), 600, 2
        ),
    )
    name, ip = new.metadata.name, new.status.pod_ip

    def reported() -> tuple[bool, str]:  # filled by the operator from the instance's status port
        state = release.cluster(client, cluster)["status"].get("instancesReportedState", {})
        mine = state.get(name, {})
        return mine.get("ip") == ip and bool(mine.get("timeLineID")) and mine.get("isPrimary"), f"{state}"

    timed(
        "network policy: operator read the new instance's status",
        lambda: api.wait_for("status", reported, 300, 2),
    )
    SUMMARY.append(f"network policy: instance {name} ({ip}) reported by the operator: {reported()[1]}")
    timed(
        "network policy: server recreated and Ready under enforcement",
        lambda: new_ready_pod(client, server_sel, server.metadata.uid, "new server Ready"),
    )
    found = timed("network policy: Service call to the new server", lambda: service_call(client, "healed"))
    assert " 200 " in found["admitted"], f"the new server cannot answer from its database: {found}"
    router = enforced["router"]
    assert router.process is not None and router.process.poll() is None, router.tail()


def test_the_cluster_bootstrapped_under_enforcement_through_its_initdb_job(enforced: dict[str, Any]) -> None:
    """The initdb Job started after kube-router enforced the chart's policies, and its first pod
    completed it: that pod's instance manager reached the API server under the default deny."""
    initdb = enforced["jobs"].get("initdb")
    assert initdb, f"no initdb Job of CloudNativePG in the events: {enforced['jobs']}"
    since = enforced["enforcing_since"]
    assert initdb["first"] and initdb["first"] >= since, f"{initdb} started before enforcement ({since})"
    assert initdb["completed"] and len(initdb["pods"]) == 1, f"not completed by its first pod: {initdb}"


def test_with_enforcement_a_second_instance_joins_through_its_job_pod(
    node: Node, enforced: dict[str, Any]
) -> None:
    """`helm upgrade` to two instances under enforcement: CloudNativePG's join Job pod copies the
    primary through the -rw Service (the API server, DNS and the primary's 5432, which the chart
    allows only with more than one instance), then the replica streams from the primary."""
    client, cluster = node.client, release.cluster_name()
    scale = node.run_dir / "two-instances.yaml"
    scale.write_text(yaml.safe_dump({"postgres": {"instances": 2}}))
    args = ["upgrade", release.RELEASE, str(chart.CHART), f"--namespace={NAMESPACE}", *release.VALUES]
    done = timed(
        "network policy: helm upgrade to two instances",
        lambda: release.helm(node, *args, f"--values={scale}"),
    )
    assert done.returncode == 0, f"helm upgrade exited {done.returncode}:\n{done.stdout}\n{done.stderr}"

    def two_ready() -> tuple[bool, str]:
        ready, state = release.cluster_ready(client, cluster)
        count = release.cluster(client, cluster).get("status", {}).get("readyInstances")
        return ready and count == 2, f"readyInstances {count}, {state}"

    try:
        timed(
            "network policy: second instance joined, Cluster Ready under enforcement",
            lambda: api.wait_for(f"Cluster {cluster} with two Ready instances", two_ready, 900, 3),
        )
    except TimeoutError as error:
        raise AssertionError(f"{error}\n{release.details(client)}") from error
    join = release.cnpg_jobs(client).get("join")
    SUMMARY.append(f"network policy: CloudNativePG Job join: {join}")
    assert join and join["completed"], f"no completed join Job in the events: {join}"
    state = release.cluster(client, cluster)["status"].get("instancesReportedState", {})
    assert sorted(s.get("isPrimary") for s in state.values()) == [False, True], state
    router = enforced["router"]
    assert router.process is not None and router.process.poll() is None, router.tail()
