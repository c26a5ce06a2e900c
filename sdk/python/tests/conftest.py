"""Fixtures for the tests that need a test bed: a cluster with sandgate and a real gVisor
node (`tests/realnode` starts one and runs these tests with SANDGATE_TEST_KUBECONFIG
pointing at it). Without one they skip, saying why; under SANDGATE_REQUIRE_REAL_NODE
they fail instead."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from typing import Any, cast

import pytest
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException

GROUP, VERSION = "sandbox.gke.io", "v1"


@pytest.fixture(scope="session")
def api() -> k8s.ApiClient:
    path = os.environ.get("SANDGATE_TEST_KUBECONFIG")
    if not path:
        why = "no test bed (SANDGATE_TEST_KUBECONFIG unset; `cargo test --test realnode` sets it)"
        if os.environ.get("SANDGATE_REQUIRE_REAL_NODE"):
            pytest.fail(why)
        pytest.skip(why)
    client: k8s.ApiClient = k8s_config.new_client_from_config(config_file=path)
    os.environ["KUBECONFIG"] = path
    return client


@pytest.fixture(scope="session")
def namespace(api: k8s.ApiClient) -> Iterator[str]:
    name = f"sdk-{uuid.uuid4().hex[:6]}"
    core = k8s.CoreV1Api(api)
    core.create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=name)))
    # The default ServiceAccount appears shortly after the namespace.
    for _ in range(100):
        try:
            core.read_namespaced_service_account("default", name)
            break
        except ApiException:
            time.sleep(0.2)
    yield name
    core.delete_namespace(name)


def template(name: str, pool: int, **pod_spec: Any) -> dict[str, Any]:
    """A template like the article's, small enough to share the test node."""
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "SandboxTemplate",
        "metadata": {"name": name},
        "spec": {
            "runtimeClassName": "gvisor",
            "template": {
                "spec": {
                    "containers": [
                        {
                            "name": "sandbox",
                            "image": "python:3.11-slim",
                            "resources": {
                                "requests": {"cpu": "100m", "memory": "128Mi"},
                                "limits": {"cpu": "1", "memory": "512Mi"},
                            },
                        }
                    ],
                    **pod_spec,
                }
            },
            "networkPolicy": {"egress": [{"ports": [{"port": 53, "protocol": "UDP"}]}]},
            "poolConfig": {"size": pool},
        },
    }


def ready_members(api: k8s.ApiClient, namespace: str, name: str) -> int:
    t = cast(
        dict[str, Any],
        k8s.CustomObjectsApi(api).get_namespaced_custom_object(
            GROUP, VERSION, namespace, "sandboxtemplates", name
        ),
    )
    return int((t.get("status") or {}).get("ready") or 0)


@pytest.fixture(scope="session")
def templates(api: k8s.ApiClient, namespace: str) -> dict[str, str]:
    """`warm` (a pool of 2), `cold` (no pool), `nowhere` (pods no node can take) and
    `stuck` (pods that never become ready: their image is not on the node)."""
    custom = k8s.CustomObjectsApi(api)
    made = {
        "warm": template("sdk-warm", 2),
        "cold": template("sdk-cold", 0),
        "nowhere": template("sdk-nowhere", 0, nodeSelector={"sandgate-test/nowhere": "true"}),
        "stuck": template("sdk-stuck", 0),
    }
    stuck = made["stuck"]["spec"]["template"]["spec"]["containers"][0]
    stuck["image"] = "localhost/not-on-this-node:1"
    stuck["imagePullPolicy"] = "Never"
    for body in made.values():
        custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "sandboxtemplates", body)
    deadline = time.monotonic() + 240
    while ready_members(api, namespace, "sdk-warm") < 2:
        assert time.monotonic() < deadline, "the warm pool did not fill"
        time.sleep(0.5)
    return {k: v["metadata"]["name"] for k, v in made.items()}
