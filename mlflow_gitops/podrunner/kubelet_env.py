"""The kubelet's environment: Services, service links, env/envFrom resolution, $(VAR) expansion."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from mlflow_gitops.podrunner.base import SERVICE_NET, Obj, PodRunnerError
from mlflow_gitops.podrunner.render import Render
from mlflow_gitops.podrunner.store import Store


def expand(text: str, mapping: Callable[[str], str | None]) -> str:
    """Kubernetes `$(VAR)` expansion: `$$` escapes, unknown references stay as written."""
    out: list[str] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "$" and i + 1 < len(text):
            nxt = text[i + 1]
            if nxt == "$":
                out.append("$")
                i += 2
                continue
            if nxt == "(":
                close = text.find(")", i + 2)
                if close != -1:
                    name = text[i + 2 : close]
                    value = mapping(name)
                    out.append(value if value is not None else f"$({name})")
                    i = close + 1
                    continue
                out.append("$(")
                i += 2
                continue
            out.append("$" + nxt)
            i += 2
            continue
        out.append(ch)
        i += 1
    return "".join(out)


@dataclass(frozen=True)
class Service:
    name: str
    namespace: str
    address: str
    ports: tuple[tuple[str | None, int, str], ...]  # (name, port, protocol)


def services_of(render: Render) -> list[Service]:
    """The Services the pod sees: the render's, CNPG's generated ones, and `kubernetes`."""
    found: list[tuple[str, str, tuple[tuple[str | None, int, str], ...]]] = []
    for svc in render.find("Service"):
        if svc["spec"].get("clusterIP") == "None":
            continue
        ports = tuple((p.get("name"), int(p["port"]), p.get("protocol", "TCP")) for p in svc["spec"]["ports"])
        found.append((svc["metadata"]["name"], render.namespace, ports))
    for cluster in render.find("Cluster"):
        for suffix in ("rw", "ro", "r"):
            found.append(
                (f"{cluster['metadata']['name']}-{suffix}", render.namespace, (("postgres", 5432, "TCP"),))
            )
    found.append(("kubernetes", "default", (("https", 443, "TCP"),)))
    return [Service(n, ns, f"{SERVICE_NET}{i}", p) for i, (n, ns, p) in enumerate(found, start=1)]


def service_link_env(services: Sequence[Service], namespace: str) -> dict[str, str]:
    """The `{SVC}_SERVICE_HOST`, `{SVC}_PORT...` variables of enableServiceLinks."""
    env: dict[str, str] = {}
    for svc in services:
        if svc.namespace != namespace and svc.name != "kubernetes":
            continue
        prefix = svc.name.upper().replace("-", "_")
        _first_name, first_port, first_proto = svc.ports[0]
        env[f"{prefix}_SERVICE_HOST"] = svc.address
        env[f"{prefix}_SERVICE_PORT"] = str(first_port)
        for pname, port, _proto in svc.ports:
            if pname:
                env[f"{prefix}_SERVICE_PORT_{pname.upper().replace('-', '_')}"] = str(port)
        env[f"{prefix}_PORT"] = f"{first_proto.lower()}://{svc.address}:{first_port}"
        for _pname, port, proto in svc.ports:
            base = f"{prefix}_PORT_{port}_{proto.upper()}"
            env[base] = f"{proto.lower()}://{svc.address}:{port}"
            env[f"{base}_PROTO"] = proto.lower()
            env[f"{base}_PORT"] = str(port)
            env[f"{base}_ADDR"] = svc.address
    return env


def kubelet_env(container: Obj, store: Store, service_env: Mapping[str, str], where: str) -> dict[str, str]:
    """The variables the kubelet hands the runtime for one container (image ENV not included)."""
    tmp: dict[str, str] = {}
    for i, src in enumerate(container.get("envFrom", [])):
        prefix = src.get("prefix", "")
        if "configMapRef" in src:
            kind, ref = "ConfigMap", src["configMapRef"]
        elif "secretRef" in src:
            kind, ref = "Secret", src["secretRef"]
        else:
            raise PodRunnerError(f"{where}.envFrom[{i}]: unknown source {sorted(src)}")
        data = store.source(kind, ref["name"], bool(ref.get("optional")), f"{where}.envFrom[{i}]")
        for key, value in (data or {}).items():
            name = prefix + key
            if not name or "=" in name:
                raise PodRunnerError(f"{where}.envFrom[{i}]: key {key!r} is not a valid variable name")
            tmp[name] = value.decode()

    def mapping(name: str) -> str | None:
        return tmp.get(name, service_env.get(name))

    for i, item in enumerate(container.get("env", [])):
        name = item["name"]
        value = item.get("value", "")
        if not isinstance(value, str):
            raise PodRunnerError(f"{where}.env[{i}] ({name}): value {value!r} is not a string")
        if value != "":
            tmp[name] = expand(value, mapping)
            continue
        source = item.get("valueFrom")
        if source is None:
            tmp[name] = ""
        elif "secretKeyRef" in source or "configMapKeyRef" in source:
            kind = "Secret" if "secretKeyRef" in source else "ConfigMap"
            ref = source["secretKeyRef" if kind == "Secret" else "configMapKeyRef"]
            optional = bool(ref.get("optional"))
            data = store.source(kind, ref["name"], optional, f"{where}.env[{i}] ({name})")
            if data is None:
                continue
            if ref["key"] not in data:
                if optional:
                    continue
                raise PodRunnerError(
                    f"{where}.env[{i}] ({name}): {kind} {ref['name']} has no key {ref['key']!r}"
                )
            tmp[name] = data[ref["key"]].decode()
        else:
            raise PodRunnerError(f"{where}.env[{i}] ({name}): valueFrom {sorted(source)} is not supported")
    return tmp | {k: v for k, v in service_env.items() if k not in tmp}


def expand_argv(container: Obj, env: Mapping[str, str]) -> list[str]:
    def mapping(name: str) -> str | None:
        return env.get(name)

    return [expand(a, mapping) for a in [*container.get("command", []), *container.get("args", [])]]
