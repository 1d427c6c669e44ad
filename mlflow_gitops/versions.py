"""The pinned versions of tools/versions.env, for the package and the tests."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VERSIONS_FILE = ROOT / "tools" / "versions.env"


def load(path: Path = VERSIONS_FILE) -> dict[str, str]:
    """Parse KEY=value lines, ignoring comments and blank lines."""
    pins: dict[str, str] = {}
    for number, raw in enumerate(path.read_text().splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep or not key.isidentifier():
            raise ValueError(f"{path.name}:{number}: expected KEY=value, got {raw!r}")
        pins[key] = value
    return pins


PINS = load()
KUBE_VERSION = PINS["KUBE_VERSION"]
