"""The client: claim a sandbox of a template, run code in it, release it.

    async with SandboxClient(namespace="default", template_name="python") as sandbox:
        print(f"Sandbox ready in: {sandbox.startup_time_ms}ms")
        result = await sandbox.run("print(1)")

`SyncSandboxClient` is the same with `with` and plain calls.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from types import TracebackType
from typing import Any

from kubernetes import client as k8s
from kubernetes import config as k8s_config

from . import claims, names
from .errors import CodeTooLarge, ExecTimeout, SandboxError
from .execution import MAX_ARGUMENT_BYTES, ExecResult, run_command

log = logging.getLogger("sandgate_sandbox")

# How long a run may take unless told, and how much of each stream is kept.
DEFAULT_RUN_TIMEOUT = 60.0
DEFAULT_MAX_OUTPUT = 1024 * 1024
# How long a claim may take to bind unless told (a cold start included).
DEFAULT_CLAIM_TIMEOUT = 120.0
# The run's own deadline in the pod is this much shorter than the client's, so the
# process is killed there first and its output still comes back.
KILL_MARGIN = 2.0


# One API client (and its connection pool) per kubeconfig and context for the process:
# a claim then costs no new TLS handshake.
_CLIENTS: dict[tuple[str | None, str | None], k8s.ApiClient] = {}
_CLIENTS_LOCK = threading.Lock()


def _api_client(kubeconfig: str | None, context: str | None) -> k8s.ApiClient:
    path = kubeconfig or os.environ.get("KUBECONFIG") or None
    with _CLIENTS_LOCK:
        if (path, context) not in _CLIENTS:
            _CLIENTS[(path, context)] = _new_api_client(path, context)
        return _CLIENTS[(path, context)]


def _new_api_client(path: str | None, context: str | None) -> k8s.ApiClient:
    """The kubeconfig (the argument, else KUBECONFIG, else ~/.kube/config), else the
    in-cluster identity."""
    try:
        api: k8s.ApiClient = k8s_config.new_client_from_config(config_file=path, context=context)
        return api
    except k8s_config.ConfigException as outside:
        try:
            k8s_config.load_incluster_config()
        except k8s_config.ConfigException:
            raise SandboxError(
                f"no cluster to talk to: {outside} (set KUBECONFIG, or run in a pod)"
            ) from outside
        return k8s.ApiClient()


class _Session:
    """The blocking core both clients share: one claim and what it is bound to."""

    def __init__(
        self,
        namespace: str,
        template_name: str,
        *,
        claim_timeout: float,
        ttl_seconds: int | None,
        api_client: k8s.ApiClient | None,
        kubeconfig: str | None,
        context: str | None,
    ) -> None:
        self.namespace = namespace
        self.template_name = template_name
        self.claim_timeout = claim_timeout
        self.ttl_seconds = ttl_seconds
        self.api = api_client or _api_client(kubeconfig, context)
        self.custom = k8s.CustomObjectsApi(self.api)
        self.core = k8s.CoreV1Api(self.api)
        self.binding: claims.Binding | None = None
        self.claim_name: str | None = None

    def open(self) -> claims.Binding:
        claims.check_template(self.custom, self.namespace, self.template_name)
        created = claims.create_claim(
            self.custom, self.namespace, self.template_name, self.ttl_seconds
        )
        self.claim_name = created["metadata"]["name"]
        try:
            self.binding = claims.wait_bound(
                self.custom, self.namespace, created, self.claim_timeout
            )
        except BaseException:
            self.close()
            raise
        if self.binding.pool_exhausted:
            log.warning(
                "pool of %s/%s exhausted: sandbox %s was started cold for claim %s",
                self.namespace,
                self.template_name,
                self.binding.sandbox,
                self.claim_name,
            )
        return self.binding

    def close(self) -> None:
        if self.claim_name:
            claims.delete_claim(self.custom, self.namespace, self.claim_name)
            self.claim_name = None

    def exec(self, argv: list[str], timeout: float, max_output: int) -> ExecResult:
        if self.binding is None:
            raise SandboxError("the sandbox is not claimed (use the client as a context manager)")
        # The pod kills a run that outlives its timeout (coreutils `timeout`, in every
        # Debian-based image); the client waits a little longer for that to come back.
        wrapped = ["timeout", "-s", "KILL", f"{timeout:g}", *argv]
        result = run_command(
            self.core,
            self.namespace,
            self.binding.pod,
            wrapped,
            container=None,
            timeout=timeout + KILL_MARGIN,
            max_output=max_output,
        )
        if result.exit_code == 137 and result.duration_ms >= timeout * 1000:
            raise ExecTimeout(timeout, result.stdout, result.stderr)
        return result

    def run_python(self, code: str, timeout: float, max_output: int) -> ExecResult:
        if len(code.encode()) > MAX_ARGUMENT_BYTES:
            raise CodeTooLarge(
                f"the code is {len(code.encode())} bytes; "
                f"at most {MAX_ARGUMENT_BYTES} are sent in one run"
            )
        return self.exec([*names.PYTHON, code], timeout, max_output)


class _Properties:
    _session: _Session

    @property
    def claim_name(self) -> str | None:
        return self._session.claim_name

    @property
    def startup_time_ms(self) -> int | None:
        """Claim created to sandbox usable, in milliseconds, as the claim's status says."""
        return self._session.binding.startup_time_ms if self._session.binding else None

    @property
    def launch_type(self) -> str | None:
        """`warm` (taken from the pool) or `cold` (started for this claim)."""
        return self._session.binding.launch_type if self._session.binding else None

    @property
    def pool_exhausted(self) -> bool:
        return bool(self._session.binding and self._session.binding.pool_exhausted)

    @property
    def pod_name(self) -> str | None:
        return self._session.binding.pod if self._session.binding else None


class SandboxClient(_Properties):
    """An async context manager: entering claims a sandbox of `template_name` and waits
    for it to be bound (a watch); leaving deletes the claim, and the sandbox goes with
    it."""

    def __init__(
        self,
        namespace: str = "default",
        template_name: str = "agent-execution-template",
        *,
        claim_timeout: float = DEFAULT_CLAIM_TIMEOUT,
        ttl_seconds: int | None = None,
        api_client: k8s.ApiClient | None = None,
        kubeconfig: str | None = None,
        context: str | None = None,
    ) -> None:
        self._session = _Session(
            namespace,
            template_name,
            claim_timeout=claim_timeout,
            ttl_seconds=ttl_seconds,
            api_client=api_client,
            kubeconfig=kubeconfig,
            context=context,
        )

    async def __aenter__(self) -> SandboxClient:
        await asyncio.to_thread(self._session.open)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await asyncio.to_thread(self._session.close)

    async def run(
        self,
        code: str,
        *,
        timeout: float = DEFAULT_RUN_TIMEOUT,
        max_output: int = DEFAULT_MAX_OUTPUT,
    ) -> ExecResult:
        """Runs Python source (`python3 -c`, passed as one argument: any quoting works)."""
        return await asyncio.to_thread(self._session.run_python, code, timeout, max_output)

    async def exec(
        self,
        command: list[str],
        *,
        timeout: float = DEFAULT_RUN_TIMEOUT,
        max_output: int = DEFAULT_MAX_OUTPUT,
    ) -> ExecResult:
        """Runs a command (an argument list; wrap in `["sh", "-c", line]` for a shell)."""
        return await asyncio.to_thread(self._session.exec, list(command), timeout, max_output)


class SyncSandboxClient(_Properties):
    """`SandboxClient` without asyncio: `with SyncSandboxClient(...) as sandbox:`."""

    def __init__(
        self,
        namespace: str = "default",
        template_name: str = "agent-execution-template",
        **kwargs: Any,
    ) -> None:
        self._session = _Session(
            namespace,
            template_name,
            claim_timeout=kwargs.pop("claim_timeout", DEFAULT_CLAIM_TIMEOUT),
            ttl_seconds=kwargs.pop("ttl_seconds", None),
            api_client=kwargs.pop("api_client", None),
            kubeconfig=kwargs.pop("kubeconfig", None),
            context=kwargs.pop("context", None),
        )
        if kwargs:
            raise TypeError(f"unexpected arguments: {', '.join(kwargs)}")

    def __enter__(self) -> SyncSandboxClient:
        self._session.open()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._session.close()

    def run(
        self,
        code: str,
        *,
        timeout: float = DEFAULT_RUN_TIMEOUT,
        max_output: int = DEFAULT_MAX_OUTPUT,
    ) -> ExecResult:
        return self._session.run_python(code, timeout, max_output)

    def exec(
        self,
        command: list[str],
        *,
        timeout: float = DEFAULT_RUN_TIMEOUT,
        max_output: int = DEFAULT_MAX_OUTPUT,
    ) -> ExecResult:
        return self._session.exec(list(command), timeout, max_output)
