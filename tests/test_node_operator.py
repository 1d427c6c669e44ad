"""The node's CloudNativePG pieces that need no node (mlflow_gitops.node.operator, cnpg_images):
what the release manifest at CNPG_VERSION runs, what the install changes in it, and how the
operand image's Debian packages and tag are derived. A bump of CNPG_VERSION whose manifest moved
the operator's image, command or configuration fails here, before a node starts.
"""

from __future__ import annotations

import shutil

import pytest

from mlflow_gitops.node import cnpg_images, operator

IMAGE = "ghcr.io/cloudnative-pg/postgresql:15.99-system-bookworm"


@pytest.fixture(scope="module")
def manifest() -> tuple[dict, ...]:
    if shutil.which("go") is None:
        pytest.skip("needs go (the release manifest is read from the module zip)")
    return operator.manifest()


def test_release_manifest_runs_the_pinned_operator_image_with_the_manager_the_image_lays_out(
    manifest: tuple[dict, ...],
) -> None:
    container = operator.deployment(manifest)["spec"]["template"]["spec"]["containers"][0]
    assert operator.operator_image() == f"ghcr.io/cloudnative-pg/cloudnative-pg:{operator.version()[1:]}"
    assert container["command"] == ["/manager"]  # cnpg_images.operator_rootfs links /manager
    assert f"--config-map-name={operator.CONFIG_MAP}" in container["args"], container["args"]
    assert {d["metadata"].get("namespace") for d in manifest if d["kind"] == "Deployment"} == {
        operator.NAMESPACE
    }


def test_install_changes_only_the_pull_policy_and_adds_the_operator_configuration(
    manifest: tuple[dict, ...],
) -> None:
    applied, changes = operator.overrides(IMAGE)
    assert len(applied) == len(manifest) + 1 and len(changes) == 2, changes
    assert applied[0]["kind"] == "Namespace" and applied[1]["kind"] == "ConfigMap"  # before the Deployment
    assert applied[1]["data"] == {"POSTGRES_IMAGE_NAME": IMAGE}
    ours = operator.deployment(applied)
    original = operator.deployment(manifest)
    assert original["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"] == "Always"
    assert ours["spec"]["template"]["spec"]["containers"][0].pop("imagePullPolicy") == "IfNotPresent"
    original["spec"]["template"]["spec"]["containers"][0].pop("imagePullPolicy")
    assert ours == original
    assert [o for o in applied[2:] if o is not ours] == [
        o for o in manifest if o is not original and o["kind"] != "Namespace"
    ]


def test_operand_tag_names_the_major_the_operator_parses_from_the_repository_it_defaults_to(
    manifest: tuple[dict, ...],
) -> None:
    assert operator.default_operand_repository() == "ghcr.io/cloudnative-pg/postgresql"
    assert cnpg_images.postgres_minor({"postgresql-15": "15.18-0+deb12u1"}) == "15.18"
    with pytest.raises(RuntimeError, match=r"postgresql-15 16\.2-1: expected 15\.<minor>"):
        cnpg_images.postgres_minor({"postgresql-15": "16.2-1"})


PACKAGES = {
    "postgresql-15": {
        "Version": "15.18-0",
        "Depends": "locales | locales-all, perl:any, debconf-2.0",
        "Provides": "",
    },
    "locales-all": {"Version": "2.36", "Depends": "libc6 (>= 2.36)", "Provides": ""},
    "perl": {"Version": "5.36", "Depends": "", "Provides": ""},
    "cdebconf": {"Version": "0.270", "Depends": "", "Provides": "debconf-2.0"},
    "libc6": {"Version": "2.36", "Depends": "", "Provides": ""},
}


def test_operand_packages_follow_dependencies_alternatives_and_virtual_packages() -> None:
    found = cnpg_images.closure(("postgresql-15",), PACKAGES)
    assert found == {
        "cdebconf": "0.270", "libc6": "2.36", "locales-all": "2.36", "perl": "5.36", "postgresql-15": "15.18-0",
    }  # fmt: skip


def test_operand_packages_name_a_dependency_nothing_installed_provides() -> None:
    broken = {**PACKAGES, "perl": {"Version": "5.36", "Depends": "perl-base (>= 5.36)", "Provides": ""}}
    with pytest.raises(
        RuntimeError, match=r"perl depends on perl-base \(>= 5\.36\), which nothing installed"
    ):
        cnpg_images.closure(("postgresql-15",), broken)
    with pytest.raises(RuntimeError, match=r"\['postgresql-16'\] are not installed"):
        cnpg_images.closure(("postgresql-16",), PACKAGES)
