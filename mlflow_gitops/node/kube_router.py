"""kube-router as the node's NetworkPolicy enforcer only, next to its CNI bridge and kube-proxy.

`--run-firewall=true --run-router=false --run-service-proxy=false`: no routes, no IPVS, no CNI
configuration of its own (`--enable-cni=false`); it watches pods, namespaces and NetworkPolicies
through the API server and keeps its iptables chains (KUBE-ROUTER-*, KUBE-NWPLCY-*, KUBE-POD-FW-*)
and ipsets in the node's network namespace, where pod traffic crosses the bridge
(net.bridge.bridge-nf-call-iptables, set when the namespace is made). Built by `make node-build`
(mlflow_gitops.node.addons, KUBE_ROUTER_VERSION).

`stop()` ends it and runs `kube-router --cleanup-config` in the namespace, which removes its chains
and ipsets, so the node goes on without policy enforcement.

    with KubeRouter(node):
        ...  # NetworkPolicies are enforced
"""

from __future__ import annotations

import re
import subprocess
from typing import TYPE_CHECKING

from mlflow_gitops.node import addons, api, config, host, processes

if TYPE_CHECKING:
    from mlflow_gitops.node.node import Node

HEALTH_PORT = 20244  # kube-router's default
RULE_MARKERS = ("KUBE-ROUTER-", "KUBE-NWPLCY-", "KUBE-POD-FW-")  # its chains in iptables-save
IPSET_MARKERS = ("KUBE-SRC-", "KUBE-DST-", "kube-router-")  # its ipsets


def binary() -> str:
    return str(addons.by_name("kube-router").path)


class KubeRouter(processes.Started):
    def __init__(self, node: Node, timeout: float = 300) -> None:
        self.node, self.timeout = node, timeout
        self.log = node.layout.log("kube-router")
        self.process: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        return [
            binary(), "--run-firewall=true", "--run-router=false", "--run-service-proxy=false",
            "--enable-cni=false", f"--kubeconfig={self.node.layout.kubeconfig('admin')}",
            f"--hostname-override={config.NODE_NAME}", f"--service-cluster-ip-range={host.SERVICE_CIDR}",
            f"--health-addr={host.NODE_IP}", f"--health-port={HEALTH_PORT}", "--v=1",
        ]  # fmt: skip

    def start(self) -> None:
        self.process = processes.spawn(self.node.netns.enter(), self.command(), self.log)
        api.wait_for("kube-router /healthz", self._healthy, self.timeout)

    def _healthy(self) -> tuple[bool, str]:
        if self.process is None or self.process.poll() is not None:
            raise RuntimeError(f"kube-router exited:\n{self.tail()}")
        return processes.healthy(self.node.netns.path, HEALTH_PORT, "/healthz")

    @staticmethod
    def version() -> str:
        """The version the binary reports ("Running .../kube-router version v2.10.0, built on ...")."""
        out = subprocess.run([binary(), "--version"], capture_output=True, text=True, timeout=30, check=False)
        match = re.search(r"version (v[^,\s]+)", out.stdout + out.stderr)
        return match.group(1) if match else f"unknown ({(out.stdout + out.stderr).strip()[:200]})"

    def tail(self, lines: int = 25) -> str:
        return processes.tail(self.log, lines)

    def rules(self) -> list[str]:
        """Its iptables lines in the node's namespace (chains and the rules jumping to them)."""
        done = host.sh(*self.node.netns.enter(), "iptables-save", "-t", "filter")
        return [line for line in done.stdout.splitlines() if any(m in line for m in RULE_MARKERS)]

    def ipsets(self) -> list[str]:
        done = host.sh(*self.node.netns.enter(), "ipset", "list", "-n")
        return [name for name in done.stdout.split() if name.startswith(IPSET_MARKERS)]

    def stop(self) -> None:
        process, self.process = self.process, None
        processes.terminate(process, grace=30)
        if process is None or not self.node.netns.exists():
            return
        done = host.sh(*self.node.netns.enter(), binary(), "--cleanup-config", check=False)
        if done.returncode != 0:
            raise RuntimeError(
                f"kube-router --cleanup-config exited {done.returncode}: {done.stderr[-2000:]}"
            )
