"""The node's configuration files, all under its run directory.

Identities are static tokens (kube-apiserver `--token-auth-file`), one per component and user
name as kubeadm names them, so RBAC's bootstrap bindings and the Node authorizer apply:
system:node:<node> in system:nodes, system:kube-proxy, system:kube-controller-manager (with
per-controller service accounts), system:kube-scheduler; an admin in system:masters. The API
server's serving certificate is the self-signed one it writes into its --cert-dir (the node
address, the `kubernetes` Service IP and names); that file, which ends with its CA, is every
client's trust bundle and the root CA the controller manager publishes to pods.
"""

from __future__ import annotations

import json
import secrets
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from mlflow_gitops.node import host
from mlflow_gitops.node.build import CNI_BIN_DIR

NODE_NAME = "mlflow-node"
API_PORT = 6443
CLUSTER_DOMAIN = "cluster.local"
PAUSE_IMAGE = "localhost/pause:latest"

USERS = {  # token file name: (user, groups)
    "admin": ("node-admin", "system:masters"),
    "kubelet": (f"system:node:{NODE_NAME}", "system:nodes"),
    "kube-proxy": ("system:kube-proxy", ""),
    "kube-controller-manager": ("system:kube-controller-manager", ""),
    "kube-scheduler": ("system:kube-scheduler", ""),
}


@dataclass
class Layout:
    """Paths under the run directory."""

    run: Path
    tokens: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.tokens = self.tokens or {name: secrets.token_hex(16) for name in USERS}

    @property
    def server(self) -> str:
        return f"https://{host.NODE_IP}:{API_PORT}"

    @property
    def ca_file(self) -> Path:
        return self.run / "apiserver" / "certs" / "apiserver.crt"

    @property
    def kubelet_client_ca(self) -> Path:
        return self.run / "apiserver" / "kubelet-client" / "ca.crt"

    @property
    def containerd_socket(self) -> Path:
        return self.run / "containerd" / "containerd.sock"

    def kubeconfig(self, name: str) -> Path:
        return self.run / "kubeconfig" / f"{name}.yaml"

    def log(self, name: str) -> Path:
        return self.run / "logs" / f"{name}.log"


def write(path: Path, text: str, mode: int = 0o644) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)
    return path


def write_identities(layout: Layout) -> None:
    lines = [f'{layout.tokens[name]},{user},{user},"{groups}"' for name, (user, groups) in USERS.items()]
    write(layout.run / "apiserver" / "tokens.csv", "\n".join(lines) + "\n", 0o600)
    for name, (user, _) in USERS.items():
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "node", "cluster": {"server": layout.server, "certificate-authority": str(layout.ca_file)}}],
            "users": [{"name": user, "user": {"token": layout.tokens[name]}}],
            "contexts": [{"name": "node", "context": {"cluster": "node", "user": user}}],
            "current-context": "node",
        }  # fmt: skip
        write(layout.kubeconfig(name), yaml.safe_dump(config), 0o600)


def kubelet_client_identity(layout: Layout) -> tuple[Path, Path]:
    """(certificate, key) the API server presents to the kubelet (pods/log, exec, port-forward):
    in system:masters, as kubeadm's apiserver-kubelet-client, signed by a CA of its own that only
    the kubelet trusts (authentication.x509.clientCAFile)."""
    ca = layout.kubelet_client_ca
    ca_key, csr, key, cert = (
        ca.with_name(name) for name in ("ca.key", "client.csr", "client.key", "client.crt")
    )
    ca.parent.mkdir(parents=True, exist_ok=True)
    for cmd in (
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(ca_key), "-out", str(ca),
         "-subj", "/CN=mlflow-node-kubelet-client-ca", "-days", "30"],
        ["openssl", "req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(csr),
         "-subj", "/O=system:masters/CN=kube-apiserver-kubelet-client"],
        ["openssl", "x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key), "-CAcreateserial",
         "-out", str(cert), "-days", "30"],
    ):  # fmt: skip
        subprocess.run(cmd, check=True, capture_output=True)
    return cert, key


def containerd_config(layout: Layout) -> Path:
    """containerd v2's configuration (version 4): root, state, sockets and runc's state under the
    run directory, the CRI with the imported pause image and Debian's CNI plugins."""
    run = layout.run / "containerd"
    runtime = "plugins.'io.containerd.cri.v1.runtime'"
    text = f"""\
version = 4
root = '{run / "root"}'
state = '{run / "state"}'

[plugins.'io.containerd.server.v1.grpc']
  address = '{layout.containerd_socket}'

[plugins.'io.containerd.server.v1.ttrpc']
  address = '{layout.containerd_socket}.ttrpc'

[plugins.'io.containerd.internal.v1.opt']
  path = '{run / "opt"}'

[plugins.'io.containerd.nri.v1.nri']
  disable = true

[plugins.'io.containerd.cri.v1.images']
  snapshotter = 'overlayfs'

[plugins.'io.containerd.cri.v1.images'.pinned_images]
  sandbox = '{PAUSE_IMAGE}'

[{runtime}]
  # This machine withholds CAP_SYS_RESOURCE: containers may only raise their OOM score adjustment.
  restrict_oom_score_adj = true
  # pods' network namespaces under the state directory, not /run/netns
  netns_mounts_under_state_dir = true

[{runtime}.containerd.runtimes.runc]
  runtime_type = 'io.containerd.runc.v2'

[{runtime}.containerd.runtimes.runc.options]
  BinaryName = '/usr/sbin/runc'
  Root = '{run / "runc"}'
  SystemdCgroup = false

[{runtime}.cni]
  bin_dirs = ['{CNI_BIN_DIR}']
  conf_dir = '{layout.run / "cni" / "net.d"}'
"""
    return write(run / "config.toml", text)


def cni_config(layout: Layout) -> Path:
    """A bridge `cni0` in the node's namespace, its address the pods' gateway; host-local IPAM."""
    conflist = {
        "cniVersion": "1.0.0",
        "name": "node",
        "plugins": [
            {
                "type": "bridge",
                "bridge": "cni0",
                "isGateway": True,
                "ipMasq": False,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": host.POD_SUBNET}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "dataDir": str(layout.run / "cni" / "ipam"),
                },
            }
        ],
    }
    return write(layout.run / "cni" / "net.d" / "10-node.conflist", json.dumps(conflist, indent=2))


def kubelet_config(layout: Layout) -> Path:
    kubelet = layout.run / "kubelet"
    config = {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "failCgroupV1": False,
        "cgroupDriver": "cgroupfs",
        "oomScoreAdj": 0,
        "containerRuntimeEndpoint": f"unix://{layout.containerd_socket}",
        "address": host.NODE_IP,
        "healthzBindAddress": "127.0.0.1",
        "readOnlyPort": 0,
        "clusterDNS": [host.DNS_SERVICE_IP],
        "clusterDomain": CLUSTER_DOMAIN,
        "resolvConf": str(write(kubelet / "resolv.conf", f"nameserver {host.NODE_IP}\n")),
        "podLogsDir": str(kubelet / "pod-logs"),
        "failSwapOn": False,
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": str(layout.kubelet_client_ca)},  # the API server's (pods/log...)
        },
        "authorization": {"mode": "Webhook"},
        "imageGCHighThresholdPercent": 100,  # the images are imported, never pulled: keep them
        "imageGCLowThresholdPercent": 99,
        "evictionHard": {  # host.require_free_space keeps a start above the disk's floor
            "memory.available": "50Mi",
            "nodefs.available": f"{host.EVICTION_FREE // 2**20}Mi",
            "imagefs.available": f"{host.EVICTION_FREE // 2**20}Mi",
        },
    }
    text = yaml.safe_dump(config, sort_keys=False)
    text = text.replace(
        "failCgroupV1: false\n",
        "# This machine's kernel mounts cgroup v1 (per-controller hierarchies under a tmpfs); kubelet\n"
        "# 1.35 and later refuse to start on cgroup v1 unless told not to.\n"
        "failCgroupV1: false\n",
    ).replace(
        "oomScoreAdj: 0\n",
        "# CAP_SYS_RESOURCE is withheld here: the kubelet may not lower its own OOM score (-999).\n"
        "oomScoreAdj: 0\n",
    )
    return write(kubelet / "config.yaml", text)


def kube_proxy_config(layout: Layout) -> Path:
    config = {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "mode": "iptables",
        "clusterCIDR": host.CLUSTER_CIDR,
        "hostnameOverride": NODE_NAME,
        "healthzBindAddress": "127.0.0.1:10256",
        "metricsBindAddress": "127.0.0.1:10249",
        "clientConnection": {"kubeconfig": str(layout.kubeconfig("kube-proxy"))},
        # conntrack sysctls are the machine's, not the namespace's: leave them alone.
        "conntrack": {"maxPerCore": 0, "min": 0, "tcpEstablishedTimeout": "0s", "tcpCloseWaitTimeout": "0s"},
        "iptables": {"localhostNodePorts": False},  # no route_localnet
    }
    return write(layout.run / "kube-proxy" / "config.yaml", yaml.safe_dump(config, sort_keys=False))
