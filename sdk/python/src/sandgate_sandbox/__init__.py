"""sandgate's Python SDK: claim a gVisor sandbox from a warm pool, run code in it, get
stdout, stderr and the exit code back. See the README beside `pyproject.toml`."""

from .client import SandboxClient, SyncSandboxClient
from .errors import (
    ClaimDenied,
    ClaimFailed,
    ClaimTimeout,
    CodeTooLarge,
    ExecTimeout,
    SandboxError,
    SandboxGone,
    TemplateNotFound,
)
from .execution import ExecResult

__all__ = [
    "ClaimDenied",
    "ClaimFailed",
    "ClaimTimeout",
    "CodeTooLarge",
    "ExecResult",
    "ExecTimeout",
    "SandboxClient",
    "SandboxError",
    "SandboxGone",
    "SyncSandboxClient",
    "TemplateNotFound",
]
