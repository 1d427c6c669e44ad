"""The upgrade rehearsal (tests/e2e/test_upgrade.py) migrates what the previous MLflow minor wrote.
Which one is read, never written into a test: the current version is Chart.yaml's appVersion, the
previous one requirements-previous.txt's mlflow pin. A pull request that bumps the MLflow minor must
move requirements-previous.txt to the pins it replaces (docs/bumping-versions.md); one that
forgets fails here, saying so."""

from __future__ import annotations

from tests.support.versions import (
    PREVIOUS_REQUIREMENTS,
    app_version,
    parse,
    pins,
    previous_version,
)

HOW = (
    "move requirements-previous.txt to the pins requirements-e2e.txt had before this bump (the "
    "newest patch of the minor before the appVersion, its image's lock), as docs/bumping-versions.md "
    "says"
)


def test_previous_mlflow_is_older_than_the_app_version() -> None:
    previous, current = previous_version(), app_version()
    assert parse(previous) < parse(current), (
        f"requirements-previous.txt pins mlflow {previous}, not older than the appVersion {current}: {HOW}"
    )


def test_previous_mlflow_is_exactly_one_minor_behind_the_app_version() -> None:
    previous, current = parse(previous_version()), parse(app_version())
    if current[1] == 0:  # a new major: the previous is the last minor of the major before
        behind = previous[0] == current[0] - 1
    else:
        behind = previous[:2] == (current[0], current[1] - 1)
    assert behind, (
        f"requirements-previous.txt pins mlflow {previous_version()} but the appVersion is "
        f"{app_version()}: the rehearsal must migrate from the minor just before; {HOW}"
    )


def test_previous_requirements_pin_the_same_packages_as_the_current_image() -> None:
    """The previous server is installed as the image installs it, lock for lock (no package left to
    the resolver, such as SQLAlchemy 2.1)."""
    previous, current = pins(PREVIOUS_REQUIREMENTS), pins()
    assert previous.keys() == current.keys(), (
        f"requirements-previous.txt and requirements-e2e.txt pin different packages: only in "
        f"previous {sorted(previous.keys() - current.keys())}, only in current "
        f"{sorted(current.keys() - previous.keys())}"
    )
