"""Least privilege, read from the Terraform: each function's service account gets exactly what its entry in
shared/topology.py declares (accessor on its secrets, publisher on its topics, enqueuer on its queues, actAs on the
invoker when it signs tasks) and nothing project-wide but Firestore and log writing.

The grants are read from the HCL (python-hcl2) and evaluated here for the few shapes infra/modules/iam uses; a grant
of any other shape fails the test until the test is taught it, so a new grant cannot slip in unread.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import hcl2
import pytest

from shared import topology
from shared.config import SETTINGS_BY_FUNCTION, secret_fields, secret_id_of

INFRA = Path(__file__).resolve().parents[2] / "infra"
TFVARS = json.loads((INFRA / "topology.auto.tfvars.json").read_text())
FUNCTION_ACCOUNT = "google_service_account.function["
PROJECT_ROLES = {"roles/datastore.user", "roles/logging.logWriter"}
# What each target kind is called in a grant resource, and which of its attributes names the target.
TARGETS = {
    "google_project_iam_member": ("project", None),
    "google_secret_manager_secret_iam_member": ("secret", "secret_id"),
    "google_pubsub_topic_iam_member": ("topic", "topic"),
    "google_cloud_tasks_queue_iam_member": ("queue", "name"),
    "google_service_account_iam_member": ("service_account", "service_account_id"),
}
# The issue's table, spelled out: the declaration must not drift from it unnoticed.
EXPECTED_SECRETS = {
    "intake": {"tenant-pepper", "metrics-token", "sealing-key"},
    "provision": {"sealing-key"},
    "readiness": {"sealing-key"},
    "cleanup": {"sealing-key"},
    "callback": {"sealing-key", "model-cache-aws-secret-access-key"},
    "webhooks": {"sealing-key"},
    "sweep": {"sealing-key"},
    "job-watch": {"sealing-key"},
}

Grant = tuple[str, str, str]  # (role, target kind, target)


def _unquote(value: str) -> str:
    return value[1:-1] if value.startswith('"') and value.endswith('"') else value


def _blocks(parsed: dict[str, Any], kind: str) -> list[tuple[str, str, dict[str, Any]]]:
    """(type, name, body) of each ``resource``/``module`` block (a module has no type: "")."""
    found = []
    for entry in parsed.get(kind, []):
        for first, value in entry.items():
            if kind == "module":
                found.append(("", _unquote(first), value))
                continue
            for name, body in value.items():
                found.append((_unquote(first), _unquote(name), body))
    return found


def _locals(parsed: dict[str, Any]) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for entry in parsed.get("locals", []):
        merged.update({k: v for k, v in entry.items() if not k.startswith("__")})
    return merged


def _parse(path: Path) -> dict[str, Any]:
    with path.open() as handle:
        return hcl2.load(handle)


TF_FILES = sorted(INFRA.rglob("*.tf"))
IAM = _parse(INFRA / "modules" / "iam" / "main.tf")
IAM_LOCALS = _locals(IAM)

_PER_ITEM = re.compile(
    r"^\$\{merge\(\[for name, (?:_|fn) in var\.functions : \{for (?P<item>\w+) in "
    r"(?:local\.(?P<local>\w+)|fn\.(?P<field>\w+)) : .*\] \.\.\.\)\}$"
)
_IF_ANY = re.compile(r"^\$\{toset\(\[for name, fn in var\.functions : name if length\(fn\.(?P<field>\w+)\) > 0\]\)\}$")
_IF_FLAG = re.compile(r"^\$\{toset\(\[for name, fn in var\.functions : name if fn\.(?P<field>\w+)\]\)\}$")
_EACH_VALUE = re.compile(r"^\$\{(?:var\.\w+\[)?each\.value\.(?P<item>\w+)\]?\}$")


def _function_items(for_each: str, functions: dict[str, Any]) -> list[tuple[str, dict[str, str]]]:
    """(function, ``each.value``) for every instance a grant's ``for_each`` makes; fails on a shape not known."""
    if for_each == "${var.functions}":
        return [(name, {}) for name in functions]
    expression = str(IAM_LOCALS.get(_local(for_each), ""))
    match = _IF_ANY.match(expression) or _IF_FLAG.match(expression)
    if match:
        return [(name, {}) for name, fn in functions.items() if fn[match["field"]]]
    match = _PER_ITEM.match(expression)
    assert match, f"a grant iterates over {for_each!r}, a shape this test does not know: teach it"
    instances = []
    for name, fn in functions.items():
        items = [_unquote(v) for v in IAM_LOCALS[match["local"]]] if match["local"] else fn[match["field"]]
        instances += [(name, {"function": name, match["item"]: item}) for item in items]
    return instances


def _local(for_each: str) -> str:
    return for_each.removeprefix("${local.").removesuffix("}") if for_each.startswith("${local.") else ""


def _target(body: dict[str, Any], attribute: str | None, each_value: dict[str, str]) -> str:
    if attribute is None:
        return "project"
    expression = body[attribute]
    if expression == "${google_service_account.invoker.name}":
        return "invoker"
    if expression == f"${{{FUNCTION_ACCOUNT}each.key].name}}":
        return "self"
    match = _EACH_VALUE.match(expression)
    assert match, f"{attribute} = {expression!r}: a target this test does not know: teach it"
    return each_value[match["item"]]


def _role(body: dict[str, Any], each_value: dict[str, str]) -> str:
    role = body["role"]
    match = _EACH_VALUE.match(role)
    return each_value[match["item"]] if match else _unquote(role)


def granted(functions: dict[str, Any]) -> dict[str, set[Grant]]:
    """Every grant infra/modules/iam makes to each function's account, for these topology functions."""
    grants: dict[str, set[Grant]] = {name: set() for name in functions}
    for kind, name, body in _blocks(IAM, "resource"):
        if FUNCTION_ACCOUNT not in str(body.get("member", "")):
            continue
        assert kind in TARGETS, f"{kind}.{name} grants a function account something this test does not know"
        target_kind, attribute = TARGETS[kind]
        for function, each_value in _function_items(body["for_each"], functions):
            member = body["member"]
            key = "each.key" if "[each.key]" in member else "each.value.function"
            assert member == f"${{{FUNCTION_ACCOUNT}{key}].member}}", f"{kind}.{name}: member {member!r}"
            grants[function].add((_role(body, each_value), target_kind, _target(body, attribute, each_value)))
    return grants


def declared(fn: dict[str, Any]) -> set[Grant]:
    """What one function's topology entry says its account may do."""
    expected = {(role, "project", "project") for role in PROJECT_ROLES}
    expected |= {("roles/secretmanager.secretAccessor", "secret", secret) for secret in fn["secrets"]}
    expected |= {("roles/pubsub.publisher", "topic", topic) for topic in fn["publishes"]}
    expected |= {("roles/cloudtasks.enqueuer", "queue", queue) for queue in fn["enqueues"]}
    if fn["enqueues"]:  # its tasks carry the invoker's OIDC token
        expected.add(("roles/iam.serviceAccountUser", "service_account", "invoker"))
    if fn["signs_tokens"]:  # it signs as itself
        expected.add(("roles/iam.serviceAccountTokenCreator", "service_account", "self"))
    return expected


@pytest.mark.parametrize("function", sorted(TFVARS["functions"]))
def test_each_function_account_gets_exactly_what_it_declares(function: str) -> None:
    assert granted(TFVARS["functions"])[function] == declared(TFVARS["functions"][function])


def test_the_declared_secrets_are_the_issue_s_table_and_the_settings_classes() -> None:
    secrets = {fn.name: set(fn.secrets) for fn in topology.FUNCTIONS}
    assert secrets == EXPECTED_SECRETS
    for fn in topology.FUNCTIONS:
        assert {secret_id_of(field) for field in secret_fields(SETTINGS_BY_FUNCTION[fn.name])} == set(fn.secrets)


def test_the_tfvars_carry_the_declaration() -> None:
    for fn in topology.FUNCTIONS:
        exported = TFVARS["functions"][fn.name]
        assert (exported["secrets"], exported["publishes"], exported["enqueues"]) == (
            list(fn.secrets),
            list(fn.publishes),
            list(fn.enqueues),
        )


def test_the_grants_follow_the_declaration_not_a_fixed_list() -> None:
    """A function declaring less gets less: the Terraform reads the declaration, it does not grant every secret."""
    narrowed = {
        name: {**fn, "secrets": [], "publishes": [], "enqueues": [], "signs_tokens": False}
        for name, fn in TFVARS["functions"].items()
    }
    for grants in granted(narrowed).values():
        assert grants == {(role, "project", "project") for role in PROJECT_ROLES}


def test_the_platform_wires_the_iam_module_from_the_topology() -> None:
    platform = _parse(INFRA / "modules" / "platform" / "main.tf")
    platform_locals = _locals(platform)
    assert platform_locals["topology"] == '${jsondecode(file("${path.module}/../../topology.auto.tfvars.json"))}'
    iam = next(body for _, name, body in _blocks(platform, "module") if name == "iam")
    assert iam["functions"] == "${local.topology.functions}"
    # Only the secrets some function declares exist at all.
    assert platform_locals["secrets"] == "${local.topology.secrets}"
    assert set(TFVARS["secrets"]) == {secret for fn in TFVARS["functions"].values() for secret in fn["secrets"]}


def test_nothing_else_in_infra_grants_a_function_account_or_replaces_a_policy() -> None:
    for path in TF_FILES:
        parsed = _parse(path)
        for kind, name, body in _blocks(parsed, "resource"):
            assert not re.search(r"_iam_(binding|policy)$", kind), f"{path}: {kind}.{name} is authoritative"
            if path.parent.name != "iam":
                assert "google_service_account.function" not in str(body.get("member", "")), f"{path}: {kind}.{name}"
            if kind == "google_project_iam_member" and FUNCTION_ACCOUNT in str(body.get("member", "")):
                assert body["for_each"] == "${local.project_bindings}"
    assert {_unquote(role) for role in IAM_LOCALS["project_roles"]} == PROJECT_ROLES
