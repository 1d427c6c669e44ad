"""Run the rendered MLflow pod on this machine, as the kubelet would run it, against a real PostgreSQL.

Used by `make e2e` (tests/e2e), `make up` (a local preview) and, later, the benchmark. Everything
is read from a render (default rendered/homelab.yaml): nothing about MLflow is restated here.

How the pod is mapped onto the machine (needs root; fails loudly otherwise):

* The pod: a "pause" process holds a new network + UTS namespace (own loopback, hostname =
  a pod-like name). Every container of the pod joins it, so the server binds exactly
  `--host=0.0.0.0 --port=5000` of its args without ever clashing with the host's port 5000.
* Services: every Service the pod can see (the render's own and the ones CloudNativePG generates
  for each `Cluster`: `<name>-rw`, `-ro`, `-r`) gets an address in 127.1.0.0/24 inside the pod,
  its four DNS names (`svc`, `svc.ns`, `svc.ns.svc`, `svc.ns.svc.cluster.local`) in the pod's
  /etc/hosts, and the service-link variables the kubelet injects (`MLFLOW_PORT=tcp://...` etc.;
  `enableServiceLinks` defaults to true). `-rw` and `-r` forward to the throwaway PostgreSQL (a
  kube-proxy stand-in: a small forwarder listening inside the pod's namespace); `-ro` has no
  endpoint with one instance, as in the cluster. So PGHOST=mlflow-postgres-rw PGPORT=5432 from the
  rendered ConfigMap are used unchanged. The Service selecting the pod forwards its ports to the
  pod's targetPorts, so a client in the pod's network (the `helm test` Pod, `run_test_pod`) reaches
  `http://mlflow.mlflow.svc.cluster.local:80`. The pod resolves nothing else (no cluster DNS).
* PostgreSQL: Debian's server (any /usr/lib/postgresql/N), initdb in a temp dir as the `postgres`
  user, 127.0.0.1 on a free port, scram for TCP as CNPG does, every `spec.postgresql.parameters`
  of the rendered Cluster passed as `-c`, database/owner (and encoding/locale if set) from
  `spec.bootstrap.initdb`, the owner's password from the test secret below.
* Reaching the server: a port-forward (what `kubectl port-forward` does: connect to
  127.0.0.1:<containerPort> inside the pod) from 127.0.0.1:<local port> on the host.
* Containers: each runs in its own mount namespace, chrooted into a read-only overlay of the host's
  root (readOnlyRootFilesystem; writable when the render says false; the writes land in a tmpfs
  that vanishes), with the volumes bind-mounted at their container paths, a private 64 MiB
  /dev/shm (a container's default), the pod's /etc/hosts and a resolv.conf with the cluster's
  search path, cwd = the image's WORKDIR, HOME from the image, then `setpriv` to
  runAsUser/runAsGroup with fsGroup and supplementalGroups as groups, no_new_privs when
  allowPrivilegeEscalation is false and no capabilities when they drop ALL. Command and args are
  exec'ed exactly as rendered after `$(VAR)` expansion (argv[0] resolved through the container's
  PATH, as runc does): the harness checks /proc/<pid>/cmdline in the tests.
* Environment: the image's ENV, then the kubelet's resolution (envFrom in order, later sources win;
  then `env` with `$(VAR)` expansion; configMapKeyRef/secretKeyRef; service links), HOSTNAME,
  and HOME from the image's passwd. ConfigMaps and Secrets come from the render (Secret `data` is
  base64). Targets of ExternalSecrets get a local test secret generated at run time (random; never
  written to the repository): keys from `spec.target.template.data` (a literal value such as
  `username: mlflow` is kept) else `spec.data[].secretKey`.
* Volumes: emptyDir -> a temp dir (0777 + fsGroup, as the kubelet makes it; medium Memory ->
  tmpfs), configMap/secret -> files with their modes (subPath mounts bind one file), a
  persistentVolumeClaim that the render contains -> a temp dir owned by root:fsGroup 2775 (fsGroup
  applied; NB on NFS the kubelet does not apply fsGroup, the export must let uid 1001 write:
  `claim_ownership=(0, 568, 0o2775)` presents the claim as such an export). A claim outlives its
  pod: a recreated pod (`restart_pod`) and a second replica (`replica_of`) find what was left.
* Images: `burakince/mlflow:<tag>` -> the venv this module runs in (.venv with `make e2e`; the tag
  must equal its mlflow version; the image's PATH with the venv's bin first, so `mlflow` and
  `python` are the venv's; directories above the venv's interpreter that the pod's uid cannot
  traverse, such as a pyenv under /root, get o+x in the container's view only; a venv under a
  volume's path, e.g. a checkout under /tmp, is bind-mounted again, read-only, over that volume);
  `busybox:<tag>` -> Debian's busybox, with /bin/sh replaced by busybox ash inside the overlay
  (the dbchecker script uses `[[` and `function`) and busybox's applets first on PATH; `find`
  and `nc` are GNU find and OpenBSD netcat, because Debian builds busybox without `find -delete`
  and `nc -z` (a dbchecker would wait forever).

Not faithful, on purpose or by necessity: the host's Python (3.11 here, 3.13 in the image) and only
the server's pinned dependencies, not the image's cloud SDKs; PostgreSQL from Debian instead of the
CNPG operand image; CPU, memory and ephemeral-storage limits are not enforced (pin with `cpus=`,
measure PSS with PeakSampler); NetworkPolicies are not enforced; /proc, /sys and /dev are the
host's and there is no PID namespace, so when the server exits its leftover children (MLflow's
huey consumers sometimes outlive it) are SIGKILLed by `stop()` as the runtime would on PID 1's
exit, and a SIGKILLed harness leaves its processes behind; seccomp is not applied; a readiness
wait on the rendered readinessProbe path replaces the kubelet's probes; Debian's busybox 1.35
stands in for the image's tag. Anything else the render asks for and this module cannot provide
(another volume type or image, a missing ConfigMap or Secret, an absolute command outside the
volumes, fieldRef env) raises PodRunnerError naming the field.

For a benchmark: `PodRunner(render, cpus=[0], args=[...], env_overrides={...})` replaces the main
container's args / adds env after the kubelet's resolution and pins the pod (and PostgreSQL unless
`postgres_cpus`) with taskset; `.server` is the exec'ed `mlflow` process (`.pid`, `.tree()`,
`.pss_bytes()`), `.url` the port-forward, `.in_pod(argv)` runs a client inside the pod's network
namespace (no forwarder in the path), `PeakSampler` records peak PSS of process trees.

For fault tests (tests/e2e): `.kill()` SIGKILLs the server's process tree, `.restart_pod()` deletes
and recreates the pod as `strategy: Recreate` does (init containers again, same claims and
database), `.postgres.stop()` / `.postgres.resume()` / `.postgres.reset_database()`,
`.run_init_container(name)`, `.run_test_pod(name)`, `.run_cronjob(name)` (one Job's pod),
`.run_pod_spec(where, spec)` (any pod spec, e.g. a client's), `PodRunner(replica_of=other)` for a
second pod of the same Deployment, `start(pod=False)` for the database alone.
"""

from mlflow_gitops.podrunner.base import DEFAULT_RENDER, ROOT, VENV, PodRunnerError
from mlflow_gitops.podrunner.cli import main
from mlflow_gitops.podrunner.images import image_of, mlflow_version
from mlflow_gitops.podrunner.kubelet_env import expand, kubelet_env
from mlflow_gitops.podrunner.pod import PodRunner
from mlflow_gitops.podrunner.postgres import Postgres, postgres_bin
from mlflow_gitops.podrunner.preflight import preflight
from mlflow_gitops.podrunner.processes import PeakSampler, Poll, Proc, free_port, process_tree
from mlflow_gitops.podrunner.render import Render
from mlflow_gitops.podrunner.store import Store
from mlflow_gitops.podrunner.volumes import materialize_volumes

__all__ = [
    "DEFAULT_RENDER",
    "ROOT",
    "VENV",
    "PeakSampler",
    "PodRunner",
    "PodRunnerError",
    "Poll",
    "Postgres",
    "Proc",
    "Render",
    "Store",
    "expand",
    "free_port",
    "image_of",
    "kubelet_env",
    "main",
    "materialize_volumes",
    "mlflow_version",
    "postgres_bin",
    "preflight",
    "process_tree",
]
