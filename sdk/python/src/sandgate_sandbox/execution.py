"""Running a command in a sandbox's pod through the Kubernetes exec API (the kubelet's
own streaming, authenticated and authorised by the apiserver: nothing listens in the
sandbox). The command's arguments travel as separate exec parameters, never through a
shell, so code of any quoting arrives byte for byte."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from kubernetes.stream import stream
from kubernetes.stream.ws_client import ERROR_CHANNEL

from .errors import ExecTimeout, SandboxError, SandboxGone

# Code larger than this would make an exec URL the apiserver may refuse.
MAX_ARGUMENT_BYTES = 256 * 1024


@dataclass(frozen=True)
class ExecResult:
    """What a run produced. `truncated` says a stream went past the output cap (the
    rest was dropped, the process was not stopped)."""

    stdout: str
    stderr: str
    exit_code: int
    duration_ms: float
    truncated: bool = False


class _Capture:
    """One output stream, kept up to `cap` characters."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.parts: list[str] = []
        self.size = 0
        self.truncated = False

    def add(self, text: str) -> None:
        if not text:
            return
        room = self.cap - self.size
        if room <= 0:
            self.truncated = True
            return
        if len(text) > room:
            text = text[:room]
            self.truncated = True
        self.parts.append(text)
        self.size += len(text)

    def text(self) -> str:
        return "".join(self.parts)


def exit_code_from_status(raw: str) -> int:
    """The exit code in the exec error channel's final Status (a `metav1.Status`):
    Success is 0, NonZeroExitCode carries it in a cause. Anything else means the command
    never ran (no such executable, the container gone): raised with the kubelet's
    message."""
    if not raw.strip():
        raise SandboxGone("the exec stream ended without a status; the sandbox may be gone")
    try:
        status: dict[str, Any] = json.loads(raw)
    except ValueError as e:
        raise SandboxError(f"unreadable exec status {raw!r}") from e
    if status.get("status") == "Success":
        return 0
    if status.get("reason") == "NonZeroExitCode":
        for cause in status.get("details", {}).get("causes", []):
            if cause.get("reason") == "ExitCode":
                try:
                    return int(cause.get("message", ""))
                except ValueError:
                    break
    raise SandboxError(f"the command did not run: {status.get('message', raw)}")


def run_command(
    core: Any,
    namespace: str,
    pod: str,
    argv: list[str],
    *,
    container: str | None,
    timeout: float,
    max_output: int,
) -> ExecResult:
    """Runs `argv` in the pod and waits for it, up to `timeout` seconds (then raises
    ExecTimeout with what was printed). Blocking: the async client calls it in a thread.
    """
    started = time.monotonic()
    kwargs: dict[str, Any] = {
        "command": argv,
        "stdin": False,
        "stdout": True,
        "stderr": True,
        "tty": False,
        "_preload_content": False,
    }
    if container:
        kwargs["container"] = container
    from kubernetes.client.exceptions import ApiException

    try:
        resp = stream(core.connect_get_namespaced_pod_exec, pod, namespace, **kwargs)
    except ApiException as e:
        # Over the websocket the apiserver's 404 arrives as a failed handshake.
        if e.status == 404 or "Handshake status 404" in str(e.reason):
            raise SandboxGone(f"pod {namespace}/{pod} is gone") from e
        raise SandboxError(f"exec in {namespace}/{pod} failed: {e.reason}: {e.body}") from e
    out, err = _Capture(max_output), _Capture(max_output)
    deadline = started + timeout
    try:
        while resp.is_open():
            left = deadline - time.monotonic()
            if left <= 0:
                raise ExecTimeout(timeout, out.text(), err.text())
            resp.update(timeout=min(left, 0.5))
            if resp.peek_stdout():
                out.add(resp.read_stdout())
            if resp.peek_stderr():
                err.add(resp.read_stderr())
        out.add(resp.read_stdout())
        err.add(resp.read_stderr())
        code = exit_code_from_status(resp.read_channel(ERROR_CHANNEL))
    finally:
        resp.close()
    return ExecResult(
        stdout=out.text(),
        stderr=err.text(),
        exit_code=code,
        duration_ms=(time.monotonic() - started) * 1000,
        truncated=out.truncated or err.truncated,
    )
