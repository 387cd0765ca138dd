"""Recorded Runpod control-plane exchanges checked against Runpod's own OpenAPI document (REST v2)."""

from __future__ import annotations

from simulators.runpod import openapi_contract
from simulators.runpod.app import Exchange


def contract_violations(exchanges: list[Exchange]) -> list[str]:
    """What Runpod's OpenAPI document does not allow in recorded control-plane exchanges.

    Every answer must be one the document declares for its operation and status. A request the document refuses
    must not have been accepted (2xx): the simulator may not be laxer than Runpod.
    """
    contract = openapi_contract.default_contract()
    violations = []
    for method, path, query, sent, status, body, headers in exchanges:
        try:
            template = contract.path_template(path)
            contract.operation(method, template)
        except openapi_contract.ContractError:
            continue  # a route Runpod does not have (a test probing 404/405)
        problems = contract.response_errors(method, template, status, body, headers)
        violations += [f"{method} {path} -> {status}: {problem}" for problem in problems]
        refused = contract.request_errors(method, template, sent, query)
        if refused and status < 300:
            violations.append(f"{method} {path} accepted a request the document refuses: {refused}")
    return violations
