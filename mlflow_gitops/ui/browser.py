"""Debian's Chromium, headless, driven by Playwright for Python, and the ways a person reaches the UI.

Playwright only drives the browser: it launches /usr/bin/chromium (`make e2e-deps` installs the
Debian package) with a fresh profile; nothing is downloaded at run time (`playwright install` is
never needed). Two ways in, both landing on the pod runner's port-forward (127.0.0.1:<local port>),
the browser's address bar and headers being those of the real path:

* the route, `https://<HTTPRoute hostname>`: TLS terminated by `tls.TLSTerminator` as the Gateway
  would; Host `<hostname>`, Origin `https://<hostname>`;
* a port-forward, `http://localhost:5000` as `kubectl port-forward svc/mlflow 5000:80` or `make up`
  give it: Host `localhost:5000`, Origin `http://localhost:5000`. When the pod runner's forward is
  on another local port, `--host-resolver-rules` sends localhost:5000 there, so port 5000 itself
  need not be free.
"""

from __future__ import annotations

import importlib.util
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from mlflow_gitops.ui.tls import TLSTerminator, self_signed

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
VIEWPORT = {"width": 1280, "height": 800}


def missing() -> list[str]:
    """What the browser needs and this machine lacks (`make e2e-deps` installs both)."""
    gaps = []
    if not CHROMIUM.exists():
        gaps.append(f"{CHROMIUM} (Debian package chromium)")
    if importlib.util.find_spec("playwright") is None:
        gaps.append("playwright (requirements-browser.txt)")
    return gaps


@dataclass(frozen=True)
class Access:
    """The address a person opens, the Host the server sees, and how this machine routes it."""

    name: str
    url: str  # no trailing slash
    host: str
    resolver_rules: tuple[str, ...] = ()
    trusted_spki: tuple[str, ...] = ()


@contextmanager
def through_route(hostname: str, local_port: int, workdir: Path) -> Iterator[Access]:
    """https://<hostname> through a local TLS terminator to the port-forward on `local_port`."""
    certificate = self_signed(hostname, workdir)
    with TLSTerminator(certificate, ("127.0.0.1", local_port)) as tls:
        yield Access(
            "route",
            f"https://{hostname}",
            hostname,
            (f"MAP {hostname}:443 127.0.0.1:{tls.port}",),
            (certificate.spki_sha256,),
        )


def through_port_forward(address: str, local_port: int) -> Access:
    """`address` (e.g. http://localhost:5000) as a port-forward gives it, served by 127.0.0.1:`local_port`."""
    parts = urlsplit(address)
    if parts.scheme != "http" or not parts.hostname or not parts.port:
        raise ValueError(f"{address!r}: expected http://<host>:<port>")
    rules = () if parts.port == local_port else (f"MAP {parts.hostname}:{parts.port} 127.0.0.1:{local_port}",)
    return Access("port-forward", f"http://{parts.netloc}", parts.netloc, rules)


@contextmanager
def chromium(access: Access) -> Iterator[Any]:
    """A Playwright BrowserContext of /usr/bin/chromium with a throwaway profile, set up for `access`."""
    from playwright.sync_api import sync_playwright

    args = list(FLAGS)
    if access.resolver_rules:
        args.append("--host-resolver-rules=" + ", ".join(access.resolver_rules))
    if access.trusted_spki:
        args.append("--ignore-certificate-errors-spki-list=" + ",".join(access.trusted_spki))
    with tempfile.TemporaryDirectory(prefix="mlflow-ui-chromium-") as profile, sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            profile, executable_path=str(CHROMIUM), headless=True, args=args, viewport=VIEWPORT
        )
        try:
            yield context
        finally:
            context.close()


@dataclass(frozen=True)
class Call:
    method: str
    path: str  # without the query
    status: int  # 0: no answer (the request failed: `error`)
    error: str = ""

    def __str__(self) -> str:
        return f"{self.method} {self.path} {self.status or self.error}"


@dataclass
class Calls:
    """Every answer the page got from the server (`origin`), from `page.on("response")`."""

    origin: str
    seen: list[Call] = field(default_factory=list)

    def watch(self, page: Any) -> None:
        page.on("response", lambda r: self._add(r.request.method, r.url, r.status))
        page.on("requestfailed", lambda r: self._add(r.method, r.url, 0, r.failure or "failed"))

    def _add(self, method: str, url: str, status: int, error: str = "") -> None:
        if url.startswith(self.origin + "/"):
            path = urlsplit(url).path
            self.seen.append(Call(method, path, status, error))

    def failed(self) -> list[Call]:
        """403, 5xx and requests without an answer (a navigation cancelling a fetch is not one)."""
        return [
            c
            for c in self.seen
            if c.status == 403 or c.status >= 500 or (c.status == 0 and "ERR_ABORTED" not in c.error)
        ]

    def api(self) -> list[Call]:
        """The UI's calls to the server's APIs (not its static files or the page itself)."""
        return [c for c in self.seen if c.path.startswith(("/ajax-api/", "/api/", "/graphql"))]

    def table(self, calls: list[Call] | None = None) -> str:
        """One line per distinct (method, path, status), with how often it was seen."""
        counts: dict[str, int] = {}
        for call in self.api() if calls is None else calls:
            counts[str(call)] = counts.get(str(call), 0) + 1
        return "\n".join(f"  {line}" + (f"  (x{n})" if n > 1 else "") for line, n in counts.items())
