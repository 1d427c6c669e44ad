"""The Kubernetes Pod Security Standards, "restricted" profile (which includes "baseline"),
checked on a pod spec. Each violation names the container and the field."""

from __future__ import annotations

from typing import Any

Obj = dict[str, Any]

RESTRICTED_VOLUMES = {
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
}
BASELINE_CAPABILITIES = {
    "AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD",
    "NET_BIND_SERVICE", "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT",
}  # fmt: skip


def containers(pod: Obj) -> list[Obj]:
    return [*pod.get("initContainers", []), *pod.get("containers", []), *pod.get("ephemeralContainers", [])]


def violations(pod: Obj) -> list[str]:
    found: list[str] = []
    psc = pod.get("securityContext", {})
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(key):
            found.append(f"pod: {key} is true")
    for volume in pod.get("volumes", []):
        kinds = set(volume) - {"name"}
        if not kinds <= RESTRICTED_VOLUMES:
            found.append(f"volume {volume['name']}: type {sorted(kinds)} not allowed")
    pod_seccomp = psc.get("seccompProfile", {}).get("type")
    for c in containers(pod):
        name = f"container {c['name']}"
        sc = c.get("securityContext", {})
        if sc.get("privileged"):
            found.append(f"{name}: privileged")
        if sc.get("allowPrivilegeEscalation") is not False:
            found.append(f"{name}: securityContext.allowPrivilegeEscalation must be false")
        if not sc.get("runAsNonRoot", psc.get("runAsNonRoot")):
            found.append(f"{name}: runAsNonRoot must be true (pod or container)")
        if sc.get("runAsUser", psc.get("runAsUser")) == 0:
            found.append(f"{name}: runAsUser must not be 0")
        seccomp = sc.get("seccompProfile", {}).get("type", pod_seccomp)
        if seccomp not in ("RuntimeDefault", "Localhost"):
            found.append(f"{name}: seccompProfile.type must be RuntimeDefault or Localhost, is {seccomp}")
        caps = sc.get("capabilities", {})
        if "ALL" not in caps.get("drop", []):
            found.append(f"{name}: capabilities.drop must contain ALL")
        added = set(caps.get("add", []))
        if not added <= {"NET_BIND_SERVICE"}:
            found.append(f"{name}: capabilities.add {sorted(added)} not allowed")
        if not added <= BASELINE_CAPABILITIES:
            found.append(f"{name}: capabilities.add beyond baseline")
        for port in c.get("ports", []):
            if port.get("hostPort"):
                found.append(f"{name}: hostPort {port['hostPort']}")
    return found
