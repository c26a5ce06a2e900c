"""What can go wrong, as exceptions a caller can act on (each documented with what to
do in the SDK's README)."""

from __future__ import annotations

from typing import Any


class SandboxError(Exception):
    """Base of every error the SDK raises."""


class TemplateNotFound(SandboxError):
    """The SandboxTemplate does not exist in the namespace (a typo, or not applied yet)."""

    def __init__(self, namespace: str, template: str) -> None:
        super().__init__(f"SandboxTemplate {namespace}/{template} not found")
        self.namespace = namespace
        self.template = template


class ClaimDenied(SandboxError):
    """The apiserver refused the SandboxClaim: sandgate's policy (its message says which
    rule and field), RBAC, or a quota. Retrying the same claim will not help."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


class ClaimTimeout(SandboxError):
    """The claim was not bound in time; `conditions` are the claim's own (for example
    a cold sandbox still starting, or pool pods that cannot be scheduled). Retry with a
    longer timeout, or after the pool refills."""

    def __init__(self, claim: str, timeout: float, conditions: list[dict[str, Any]]) -> None:
        said = "; ".join(
            f"{c.get('type')}={c.get('status')}: {c.get('message', '')}" for c in conditions
        )
        super().__init__(
            f"SandboxClaim {claim} not bound within {timeout:g}s" + (f" ({said})" if said else "")
        )
        self.claim = claim
        self.timeout = timeout
        self.conditions = conditions


class ExecTimeout(SandboxError):
    """The code ran longer than its timeout and was killed. What it printed until then is
    in `stdout` / `stderr`."""

    def __init__(self, timeout: float, stdout: str, stderr: str) -> None:
        super().__init__(f"the code did not finish within {timeout:g}s and was killed")
        self.timeout = timeout
        self.stdout = stdout
        self.stderr = stderr


class ClaimFailed(SandboxError):
    """The claim failed before it was bound (its sandbox failed to start: the pod cannot
    be scheduled, or exited); `conditions` say why. Claim again once the cause is fixed."""

    def __init__(self, claim: str, conditions: list[dict[str, Any]]) -> None:
        said = "; ".join(f"{c.get('type')}: {c.get('message', '')}" for c in conditions)
        super().__init__(f"SandboxClaim {claim} failed" + (f" ({said})" if said else ""))
        self.claim = claim
        self.conditions = conditions


class SandboxGone(SandboxError):
    """The sandbox (its claim, Sandbox or pod) no longer exists or failed: claim a new
    one."""


class CodeTooLarge(SandboxError):
    """The code is larger than the SDK sends in one call."""
