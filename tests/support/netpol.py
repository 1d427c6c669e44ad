"""A small evaluator of networking.k8s.io/v1 NetworkPolicy semantics, for walking the rendered
policies: a connection is allowed when the source's egress and the destination's ingress allow it.
It covers what the chart uses (pod and namespace selectors with matchLabels and matchExpressions,
ipBlock, TCP/UDP ports); anything else raises, so a new construct cannot be silently misjudged.
Every verdict is cross-checked with np-guard's netpol-analyzer (tests/support/netpol_analyzer.py)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any

from tests.support import netpol_analyzer

Obj = dict[str, Any]


@dataclass(frozen=True)
class Pod:
    namespace: str
    labels: dict[str, str] = field(default_factory=dict)
    namespace_labels: dict[str, str] = field(default_factory=dict)
    ip: str = "10.0.0.1"
    external: bool = False  # an address outside the cluster: only ipBlock peers match it

    def ns_labels(self) -> dict[str, str]:
        return {"kubernetes.io/metadata.name": self.namespace, **self.namespace_labels}


def expression_matches(expression: Obj, labels: dict[str, str]) -> bool:
    key, operator, values = expression["key"], expression["operator"], expression.get("values", [])
    if operator == "Exists":
        return key in labels
    if operator == "DoesNotExist":
        return key not in labels
    if operator == "In":
        return labels.get(key) in values
    if operator == "NotIn":
        return labels.get(key) not in values
    raise NotImplementedError(f"matchExpressions operator {operator}")


def matches(selector: Obj | None, labels: dict[str, str]) -> bool:
    if selector is None:
        return True
    unsupported = set(selector) - {"matchLabels", "matchExpressions"}
    if unsupported:
        raise NotImplementedError(f"selector fields {unsupported}")
    return all(labels.get(k) == v for k, v in (selector.get("matchLabels") or {}).items()) and all(
        expression_matches(e, labels) for e in selector.get("matchExpressions") or []
    )


def peer_matches(peer: Obj, policy_ns: str, other: Pod) -> bool:
    if "ipBlock" in peer:
        block = peer["ipBlock"]
        inside = ipaddress.ip_address(other.ip) in ipaddress.ip_network(block["cidr"])
        return inside and not any(
            ipaddress.ip_address(other.ip) in ipaddress.ip_network(e) for e in block.get("except", [])
        )
    if other.external:
        return False
    unsupported = set(peer) - {"podSelector", "namespaceSelector"}
    if unsupported:
        raise NotImplementedError(f"peer fields {unsupported}")
    if "namespaceSelector" in peer:
        if not matches(peer["namespaceSelector"], other.ns_labels()):
            return False
    elif other.namespace != policy_ns:
        return False
    return matches(peer.get("podSelector"), other.labels)


def port_matches(ports: list[Obj] | None, port: int, protocol: str) -> bool:
    if not ports:
        return True
    for p in ports:
        if "endPort" in p or isinstance(p.get("port"), str):
            raise NotImplementedError(f"port form {p}")
        if p.get("protocol", "TCP") == protocol and p.get("port") in (None, port):
            return True
    return False


def direction_allows(
    policies: list[Obj], pod: Pod, other: Pod, port: int, protocol: str, direction: str, namespace: str
) -> bool:
    key, peers_key = ("ingress", "from") if direction == "Ingress" else ("egress", "to")
    selecting = [
        p
        for p in policies
        if p["metadata"].get("namespace", namespace) == pod.namespace
        and matches(p["spec"]["podSelector"], pod.labels)
        and direction in p["spec"].get("policyTypes", ["Ingress"])
    ]
    if not selecting:
        return True  # not isolated in this direction
    for policy in selecting:
        ns = policy["metadata"].get("namespace", namespace)
        for rule in policy["spec"].get(key, []):
            peers = rule.get(peers_key)
            peer_ok = not peers or any(peer_matches(peer, ns, other) for peer in peers)
            if peer_ok and port_matches(rule.get("ports"), port, protocol):
                return True
    return False


def allowed(
    policies: list[Obj], src: Pod, dst: Pod, port: int, protocol: str = "TCP", *, namespace: str
) -> bool:
    """Policies without metadata.namespace belong to `namespace` (where helm installs them)."""
    verdict = all(
        # A policy never selects an address outside the cluster: only the in-cluster ends are isolated.
        end.external or direction_allows(policies, end, other, port, protocol, direction, namespace)
        for end, other, direction in ((src, dst, "Egress"), (dst, src, "Ingress"))
    )
    netpol_analyzer.confirm(policies, src, dst, port, protocol, namespace, verdict)
    return verdict
