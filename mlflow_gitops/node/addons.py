"""The node's add-ons in `make node-build`: binaries built from a module of tools/node/ of their own.

* kube-router (KUBE_ROUTER_VERSION), the NetworkPolicy enforcer (mlflow_gitops.node.kube_router
  runs it): tools/node/kube-router, a module with one `tool` line and the release's requirements
  (`go install` is refused: a dependency's pseudo-version is not served; that go.mod says which).
  Its Debian package ipset is in build.PACKAGES.
* External Secrets' controller (EXTERNAL_SECRETS_VERSION): tools/node/external-secrets;
* Flux's source-, kustomize- and helm-controller (FLUX_SOURCE_CONTROLLER_VERSION,
  FLUX_KUSTOMIZE_CONTROLLER_VERSION, FLUX_HELM_CONTROLLER_VERSION): tools/node/flux/<name>,
  each a module with one `tool` line and the replaces of the release's go.mod (`go install` refuses
  a module with replaces; the go.mod files say what differs from the release).

Each is built with `go build` in its module's directory (CGO off: apiserver_build.go_env; the
version stamped), kept when `go version -m` finds the pinned module version in ./bin's binary, and
checked after the build.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from mlflow_gitops.node import gobuild
from mlflow_gitops.versions import PINS, ROOT

TOOLS = ROOT / "tools" / "node"


@dataclass(frozen=True)
class ToolModule:
    """A binary built from `package` in the module `directory`, which requires `module` at the pin."""

    name: str
    module: str
    package: str
    pin_key: str
    directory: Path
    version_var: str = ""  # the package variable -X stamps with the version (empty: none)

    @property
    def version(self) -> str:
        return PINS[self.pin_key]

    @property
    def path(self) -> Path:
        return gobuild.BIN / self.name

    def required(self) -> str | None:
        """The version of `module` the directory's go.mod requires."""
        gomod = (self.directory / "go.mod").read_text()
        match = re.search(rf"^\s*(?:require\s+)?{re.escape(self.module)} (v\S+)", gomod, re.MULTILINE)
        return match.group(1) if match else None

    def ldflags(self) -> str:
        return "-s -w" + (f" -X {self.version_var}={self.version}" if self.version_var else "")


KUBE_ROUTER = "github.com/cloudnativelabs/kube-router/v2"
EXTERNAL_SECRETS = "github.com/external-secrets/external-secrets"
ADDONS = (
    ToolModule(
        "kube-router", KUBE_ROUTER, f"{KUBE_ROUTER}/cmd/kube-router", "KUBE_ROUTER_VERSION",
        TOOLS / "kube-router", f"{KUBE_ROUTER}/pkg/version.Version",
    ),
    *(
        ToolModule(name, f"github.com/fluxcd/{name}", f"github.com/fluxcd/{name}", pin, TOOLS / "flux" / name)
        for name, pin in (
            ("source-controller", "FLUX_SOURCE_CONTROLLER_VERSION"),
            ("kustomize-controller", "FLUX_KUSTOMIZE_CONTROLLER_VERSION"),
            ("helm-controller", "FLUX_HELM_CONTROLLER_VERSION"),
        )
    ),
    ToolModule(
        "external-secrets", EXTERNAL_SECRETS, EXTERNAL_SECRETS, "EXTERNAL_SECRETS_VERSION", TOOLS / "external-secrets",
    ),
)  # fmt: skip
NAMES = tuple(tool.name for tool in ADDONS)
# Built only by `make node-flux`: their one test (tests/node/test_flux.py) needs the upstream chart,
# and cold they take longer than the rest of the node together.
FLUX = tuple(name for name in NAMES if name.endswith("-controller"))
# Built only by `make node-external-secrets`, for tests/node/test_external_secrets.py (same reasons).
EXTERNAL_SECRETS_NAMES = ("external-secrets",)
APART = (*FLUX, *EXTERNAL_SECRETS_NAMES)  # not in `make node-build`, not needed to start the node


def by_name(name: str) -> ToolModule:
    return next(tool for tool in ADDONS if tool.name == name)


def check_module(tool: ToolModule) -> None:
    if (found := tool.required()) != tool.version:
        where = tool.directory.relative_to(ROOT)
        raise SystemExit(
            f"{where}/go.mod requires {tool.module} {found}, {tool.pin_key} is {tool.version}: "
            f"set the require line to {tool.version} and run `go mod tidy` in {where}"
        )


def build_tool(tool: ToolModule) -> str:
    if gobuild.module_version(tool.path, tool.module) == tool.version:
        return f"{tool.name} {tool.version}: ./bin (up to date)"
    check_module(tool)
    cmd = ["go", "build", "-trimpath", "-ldflags", tool.ldflags(), "-o", str(tool.path), tool.package]
    message = gobuild.timed(f"{tool.name} {tool.version}", lambda: gobuild.run(cmd, cwd=tool.directory))
    if (found := gobuild.module_version(tool.path, tool.module)) != tool.version:
        raise SystemExit(f"{tool.name}: built bin/{tool.name} from {tool.module} {found}, not {tool.version}")
    return message


def missing(names: tuple[str, ...] = NAMES) -> list[str]:
    return [
        f"bin/{tool.name} {tool.version}"
        for tool in ADDONS
        if tool.name in names and gobuild.module_version(tool.path, tool.module) != tool.version
    ]


def main(wanted: set[str]) -> None:
    for tool in ADDONS:
        if tool.name in wanted:
            print(build_tool(tool), flush=True)
