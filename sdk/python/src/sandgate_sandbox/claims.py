"""SandboxClaims through the apiserver: create one, watch it until bound, delete it.
Blocking calls of the official `kubernetes` client; the async client runs them in
threads."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

from kubernetes import watch
from kubernetes.client.exceptions import ApiException

from . import names
from .errors import (
    ClaimDenied,
    ClaimFailed,
    ClaimTimeout,
    SandboxError,
    SandboxGone,
    TemplateNotFound,
)


@dataclass
class Binding:
    """A bound claim: which sandbox and pod it got, how fast, and how."""

    claim: str
    sandbox: str
    pod: str
    startup_time_ms: int | None
    launch_type: str | None
    conditions: list[dict[str, Any]] = field(default_factory=list)

    @property
    def pool_exhausted(self) -> bool:
        """The pool had no warm sandbox: this one was started for the claim (cold)."""
        return self.launch_type == names.LAUNCH_COLD or any(
            c.get("type") == names.CONDITION_POOL_EXHAUSTED for c in self.conditions
        )


def api_message(e: ApiException) -> str:
    """The apiserver's message (an admission webhook's denial included)."""
    try:
        body = json.loads(e.body or "{}")
        return str(body.get("message") or e.reason)
    except (TypeError, ValueError):
        return str(e.body or e.reason)


def check_template(custom: Any, namespace: str, template: str) -> None:
    try:
        custom.get_namespaced_custom_object(
            names.GROUP, names.VERSION, namespace, names.TEMPLATES, template
        )
    except ApiException as e:
        if e.status == 404:
            raise TemplateNotFound(namespace, template) from e
        raise SandboxError(
            f"cannot read SandboxTemplate {namespace}/{template}: {api_message(e)}"
        ) from e


def create_claim(
    custom: Any, namespace: str, template: str, ttl_seconds: int | None
) -> dict[str, Any]:
    spec: dict[str, Any] = {"templateName": template}
    if ttl_seconds is not None:
        spec["ttlSeconds"] = ttl_seconds
    body = {
        "apiVersion": f"{names.GROUP}/{names.VERSION}",
        "kind": names.CLAIM_KIND,
        "metadata": {"generateName": f"{template}-"},
        "spec": spec,
    }
    try:
        created: dict[str, Any] = custom.create_namespaced_custom_object(
            names.GROUP, names.VERSION, namespace, names.CLAIMS, body
        )
    except ApiException as e:
        if e.status in (400, 403, 422):
            raise ClaimDenied(api_message(e), e.status) from e
        raise SandboxError(f"cannot create a SandboxClaim in {namespace}: {api_message(e)}") from e
    return created


def _binding(claim: dict[str, Any]) -> Binding | None:
    status = claim.get("status") or {}
    name = claim["metadata"]["name"]
    conditions = status.get("conditions") or []
    phase = status.get("phase")
    if phase == names.PHASE_FAILED:
        raise ClaimFailed(name, conditions)
    if phase == names.PHASE_EXPIRED:
        raise SandboxGone(f"SandboxClaim {name} expired before it was bound")
    if any(
        c.get("type") == names.CONDITION_TEMPLATE_NOT_FOUND and c.get("status") == "True"
        for c in conditions
    ):
        raise TemplateNotFound(
            claim["metadata"].get("namespace", ""), claim["spec"]["templateName"]
        )
    if phase != names.PHASE_BOUND or not status.get("podName"):
        return None
    return Binding(
        claim=name,
        sandbox=status.get("sandbox", ""),
        pod=status["podName"],
        startup_time_ms=status.get("startupTimeMs"),
        launch_type=status.get("launchType"),
        conditions=conditions,
    )


def wait_bound(custom: Any, namespace: str, created: dict[str, Any], timeout: float) -> Binding:
    """Watches the claim (from the version `create` returned, so no change is missed)
    until it is bound, fails, or `timeout` passes."""
    name = created["metadata"]["name"]
    bound = _binding(created)
    if bound:
        return bound
    deadline = time.monotonic() + timeout
    version = created["metadata"].get("resourceVersion")
    last = created
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise ClaimTimeout(name, timeout, (last.get("status") or {}).get("conditions") or [])
        w = watch.Watch()
        try:
            for event in w.stream(
                custom.list_namespaced_custom_object,
                names.GROUP,
                names.VERSION,
                namespace,
                names.CLAIMS,
                field_selector=f"metadata.name={name}",
                resource_version=version,
                timeout_seconds=max(1, int(left)),
            ):
                obj = event["object"]
                if event["type"] == "DELETED":
                    raise SandboxGone(f"SandboxClaim {namespace}/{name} was deleted")
                if event["type"] == "ERROR":
                    # An expired resourceVersion: start over from the current object.
                    version = None
                    break
                last = obj
                version = obj["metadata"].get("resourceVersion", version)
                bound = _binding(obj)
                if bound:
                    return bound
                if time.monotonic() >= deadline:
                    break
        except ApiException as e:
            if e.status == 410:
                version = None
                continue
            raise SandboxError(f"watching SandboxClaim {namespace}/{name}: {api_message(e)}") from e
        finally:
            w.stop()


def delete_claim(custom: Any, namespace: str, name: str) -> None:
    """Deletes the claim; its sandbox and pod go with it (owner references)."""
    try:
        custom.delete_namespaced_custom_object(
            names.GROUP, names.VERSION, namespace, names.CLAIMS, name
        )
    except ApiException as e:
        if e.status != 404:
            raise SandboxError(
                f"cannot delete SandboxClaim {namespace}/{name}: {api_message(e)}"
            ) from e
