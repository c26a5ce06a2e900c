"""The SDK's pure parts: exec status parsing, output capture, error messages, the
article's module name, the LangChain tool's shape. No cluster needed."""

from __future__ import annotations

import json

import pytest
from kubernetes.client.exceptions import ApiException

import gke_agent_sandbox
import sandgate_sandbox
from sandgate_sandbox import ClaimTimeout, SandboxError, SandboxGone
from sandgate_sandbox.claims import Binding, api_message
from sandgate_sandbox.execution import _Capture, exit_code_from_status


def test_the_exit_code_comes_from_the_exec_status() -> None:
    assert exit_code_from_status('{"metadata":{},"status":"Success"}') == 0
    failure = {
        "status": "Failure",
        "reason": "NonZeroExitCode",
        "message": "command terminated with non-zero exit code: error executing command [...]",
        "details": {"causes": [{"reason": "ExitCode", "message": "7"}]},
    }
    assert exit_code_from_status(json.dumps(failure)) == 7


def test_a_command_that_never_ran_is_an_error_not_an_exit_code() -> None:
    not_found = {
        "status": "Failure",
        "reason": "InternalError",
        "message": 'exec: "nope": executable file not found in $PATH',
    }
    with pytest.raises(SandboxError, match="executable file not found"):
        exit_code_from_status(json.dumps(not_found))
    with pytest.raises(SandboxGone):
        exit_code_from_status("")


def test_output_is_capped_and_says_so() -> None:
    c = _Capture(5)
    c.add("abc")
    c.add("defgh")
    c.add("ij")
    assert c.text() == "abcde"
    assert c.truncated
    ok = _Capture(10)
    ok.add("abc")
    assert ok.text() == "abc" and not ok.truncated


def test_errors_carry_what_the_user_needs() -> None:
    e = ClaimTimeout(
        "c-1",
        5,
        [{"type": "Bound", "status": "False", "message": "waiting for a cold sandbox"}],
    )
    assert "c-1" in str(e) and "waiting for a cold sandbox" in str(e)
    denial = ApiException(status=400, reason="Bad Request")
    denial.body = json.dumps(
        {"message": "admission webhook denied the request: sandgate denied ... [policy]"}
    )
    assert api_message(denial).startswith("admission webhook denied")


def test_a_cold_binding_says_the_pool_was_exhausted() -> None:
    assert Binding("c", "s", "p", 900, "cold").pool_exhausted
    assert not Binding("c", "s", "p", 20, "warm").pool_exhausted


def test_the_articles_module_name_is_the_sdk() -> None:
    assert gke_agent_sandbox.SandboxClient is sandgate_sandbox.SandboxClient
    assert set(gke_agent_sandbox.__all__) == set(sandgate_sandbox.__all__)


def test_the_langchain_tool_takes_code() -> None:
    from sandgate_sandbox.langchain import execute_code_safely

    assert execute_code_safely.name == "execute_code_safely"
    assert set(execute_code_safely.args) == {"code"}
    assert "sandbox" in execute_code_safely.description
