"""The SDK against a real gVisor node (skipped without a test bed, see conftest.py):
claims, runs, timeouts, output caps, every error a user can act on, the synchronous
twin and the LangChain tool."""

from __future__ import annotations

import asyncio
import time
from typing import Any, cast

import pytest
from kubernetes import client as k8s

from sandgate_sandbox import (
    ClaimDenied,
    ClaimFailed,
    ClaimTimeout,
    ExecTimeout,
    SandboxClient,
    SandboxGone,
    SyncSandboxClient,
    TemplateNotFound,
)

GROUP, VERSION = "sandbox.gke.io", "v1"


def claims_left(api: k8s.ApiClient, namespace: str) -> list[str]:
    listed = cast(
        dict[str, Any],
        k8s.CustomObjectsApi(api).list_namespaced_custom_object(
            GROUP, VERSION, namespace, "sandboxclaims"
        ),
    )
    items: list[dict[str, Any]] = listed["items"]
    return [c["metadata"]["name"] for c in items if not c["metadata"].get("deletionTimestamp")]


async def test_run_returns_stdout_stderr_and_exit_code(
    api: k8s.ApiClient, namespace: str, templates: dict[str, str]
) -> None:
    async with SandboxClient(namespace=namespace, template_name=templates["warm"]) as sandbox:
        assert isinstance(sandbox.startup_time_ms, int)
        assert sandbox.launch_type in ("warm", "cold")
        result = await sandbox.run(
            "import sys\nprint('to stdout')\nprint('to stderr', file=sys.stderr)\nsys.exit(3)"
        )
        assert result.stdout == "to stdout\n"
        assert result.stderr == "to stderr\n"
        assert result.exit_code == 3
        # The sandbox is gVisor's, and the same one across runs.
        kernel = await sandbox.run("print(open('/proc/version').read())")
        assert "gvisor" in kernel.stdout, kernel
        pid1 = await sandbox.exec(["cat", "/proc/1/cmdline"])
        assert pid1.stdout.startswith("python3"), pid1
    assert claims_left(api, namespace) == [], "leaving the context deletes the claim"


async def test_code_of_any_quoting_arrives_unchanged(
    namespace: str, templates: dict[str, str]
) -> None:
    tricky = 'it\'s "quoted" \\ $HOME `id` ; echo pwned | ünïcødé\nsecond line'
    code = f"print({tricky!r}, end='')"
    async with SandboxClient(namespace=namespace, template_name=templates["warm"]) as sandbox:
        result = await sandbox.run(code)
    assert result.exit_code == 0, result
    assert result.stdout == tricky


async def test_a_run_past_its_timeout_is_killed_in_the_sandbox(
    namespace: str, templates: dict[str, str]
) -> None:
    async with SandboxClient(namespace=namespace, template_name=templates["warm"]) as sandbox:
        started = time.monotonic()
        with pytest.raises(ExecTimeout) as e:
            await sandbox.run(
                "import time\n# the-sleeper\nprint('started', flush=True)\ntime.sleep(300)",
                timeout=2,
            )
        assert time.monotonic() - started < 30
        assert "started" in e.value.stdout
        # Killed in the sandbox, not only abandoned by the client.
        ps = await sandbox.run(
            "import os\n"
            "mark = 'the-' + 'sleeper'\n"
            "print(sum(mark in open(f'/proc/{p}/cmdline').read()\n"
            "          for p in os.listdir('/proc') if p.isdigit()))"
        )
        assert ps.stdout.strip() == "0", ps


async def test_output_beyond_the_cap_is_cut_and_says_so(
    namespace: str, templates: dict[str, str]
) -> None:
    async with SandboxClient(namespace=namespace, template_name=templates["warm"]) as sandbox:
        result = await sandbox.run("print('x' * 200000)", max_output=1000)
    assert len(result.stdout) == 1000 and result.truncated
    assert result.exit_code == 0


async def test_shell_commands_run_in_the_command_form(
    namespace: str, templates: dict[str, str]
) -> None:
    async with SandboxClient(namespace=namespace, template_name=templates["warm"]) as sandbox:
        result = await sandbox.exec(["sh", "-c", "echo \"$0 and 'quotes'\"; exit 4", "arg0"])
    assert result.stdout == "arg0 and 'quotes'\n"
    assert result.exit_code == 4


async def test_a_missing_template_is_named(namespace: str) -> None:
    with pytest.raises(TemplateNotFound, match="no-such-template"):
        async with SandboxClient(namespace=namespace, template_name="no-such-template"):
            pass


async def test_a_claim_sandgate_refuses_says_why(
    api: k8s.ApiClient, namespace: str, templates: dict[str, str]
) -> None:
    with pytest.raises(ClaimDenied) as e:
        async with SandboxClient(
            namespace=namespace, template_name=templates["warm"], ttl_seconds=999999
        ):
            pass
    assert "sandboxclaim.lifetime" in e.value.message, e.value.message
    assert claims_left(api, namespace) == []


async def test_a_claim_not_bound_in_time_names_its_conditions(
    api: k8s.ApiClient, namespace: str, templates: dict[str, str]
) -> None:
    with pytest.raises(ClaimTimeout) as e:
        async with SandboxClient(
            namespace=namespace, template_name=templates["stuck"], claim_timeout=8
        ):
            pass
    assert e.value.conditions, "the claim's own conditions come with the error"
    assert claims_left(api, namespace) == [], "a claim that timed out is deleted"


async def test_a_claim_whose_sandbox_cannot_start_fails_at_once(
    api: k8s.ApiClient, namespace: str, templates: dict[str, str]
) -> None:
    started = time.monotonic()
    with pytest.raises(ClaimFailed) as e:
        async with SandboxClient(namespace=namespace, template_name=templates["nowhere"]):
            pass
    assert time.monotonic() - started < 60, "not the whole claim timeout"
    assert e.value.conditions
    assert claims_left(api, namespace) == []


async def test_an_empty_pool_gives_a_cold_sandbox_that_really_starts(
    namespace: str, templates: dict[str, str]
) -> None:
    async with SandboxClient(namespace=namespace, template_name=templates["cold"]) as sandbox:
        assert sandbox.launch_type == "cold"
        assert sandbox.pool_exhausted
        result = await sandbox.run("print(6 * 7)")
    assert result.stdout == "42\n"


async def test_a_sandbox_taken_away_is_reported_gone(
    api: k8s.ApiClient, namespace: str, templates: dict[str, str]
) -> None:
    core = k8s.CoreV1Api(api)
    async with SandboxClient(namespace=namespace, template_name=templates["warm"]) as sandbox:
        assert sandbox.claim_name and sandbox.pod_name
        k8s.CustomObjectsApi(api).delete_namespaced_custom_object(
            GROUP, VERSION, namespace, "sandboxclaims", sandbox.claim_name
        )
        deadline = time.monotonic() + 120
        while any(
            p.metadata is not None and p.metadata.name == sandbox.pod_name
            for p in core.list_namespaced_pod(namespace).items
        ):
            assert time.monotonic() < deadline, "the pod went with its claim"
            await asyncio.sleep(0.5)
        with pytest.raises(SandboxGone):
            await sandbox.run("print(1)")


def test_the_synchronous_twin(namespace: str, templates: dict[str, str]) -> None:
    with SyncSandboxClient(namespace=namespace, template_name=templates["warm"]) as sandbox:
        result = sandbox.run("print('sync')")
    assert result.stdout == "sync\n" and result.exit_code == 0


async def test_the_langchain_tool_runs_code_with_quotes(
    monkeypatch: pytest.MonkeyPatch, namespace: str, templates: dict[str, str]
) -> None:
    from sandgate_sandbox.langchain import execute_code_safely

    monkeypatch.setenv("SANDGATE_NAMESPACE", namespace)
    monkeypatch.setenv("SANDGATE_TEMPLATE", templates["warm"])
    said = await execute_code_safely.ainvoke({"code": 'print("it\'s fine")'})
    assert said == "it's fine\n"
    failed = await execute_code_safely.ainvoke({"code": "raise ValueError('no')"})
    assert failed.startswith("Error: ") and "ValueError: no" in failed
