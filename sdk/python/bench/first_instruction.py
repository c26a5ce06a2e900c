"""Time to first instruction through the SDK, against a test bed (run by
`cargo bench --bench first_instruction`, which brings one up and sets KUBECONFIG).

For each of WARM claims (the pool refilled before each) and COLD claims (a template
without a pool): claim created -> bound (seen through the watch) -> first
`run("print(1)")` returned, on the client's clock; then EXEC runs in one sandbox (the
exec round trip alone, with Python and with `true`), and the pool refill rate (the pool
resized from 0 to REFILL, ready members counted). Prints one JSON object.

usage: first_instruction.py NAMESPACE WARM_TEMPLATE COLD_TEMPLATE
env: WARM (30), COLD (8), EXEC (50), REFILL (4)
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import sys
import time
from typing import Any, cast

from kubernetes import client as k8s
from kubernetes import config as k8s_config

from sandgate_sandbox import SandboxClient

GROUP, VERSION = "sandbox.gke.io", "v1"


def quantiles(xs: list[float]) -> dict[str, float]:
    s = sorted(xs)

    def q(p: float) -> float:
        return s[min(len(s) - 1, int(p * len(s)))]

    return {
        "n": len(s),
        "p50": round(q(0.50), 1),
        "p90": round(q(0.90), 1),
        "p99": round(q(0.99), 1),
        "max": round(s[-1], 1),
        "mean": round(statistics.fmean(s), 1),
    }


def template(custom: k8s.CustomObjectsApi, ns: str, name: str) -> dict[str, Any]:
    return cast(
        dict[str, Any],
        custom.get_namespaced_custom_object(GROUP, VERSION, ns, "sandboxtemplates", name),
    )


def ready_members(custom: k8s.CustomObjectsApi, ns: str, name: str) -> int:
    """Unclaimed Sandboxes of the template whose pod is Ready (what a warm bind takes)."""
    listed = cast(
        dict[str, Any],
        custom.list_namespaced_custom_object(
            GROUP, VERSION, ns, "sandboxes", label_selector=f"sandbox.gke.io/template={name}"
        ),
    )
    return sum(
        1
        for sb in listed["items"]
        if (sb.get("status") or {}).get("phase") == "Ready"
        and "sandbox.gke.io/claim" not in (sb["metadata"].get("labels") or {})
        and not sb["metadata"].get("deletionTimestamp")
    )


def wait_ready(custom: k8s.CustomObjectsApi, ns: str, name: str, want: int) -> None:
    deadline = time.monotonic() + 300
    while ready_members(custom, ns, name) < want:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{ns}/{name}: {want} ready members not within 300 s")
        time.sleep(0.05)


async def one_claim(ns: str, name: str) -> dict[str, Any]:
    t0 = time.monotonic()
    async with SandboxClient(namespace=ns, template_name=name, claim_timeout=300) as sandbox:
        t_bound = time.monotonic()
        result = await sandbox.run("print(1)")
        t_first = time.monotonic()
        assert result.stdout == "1\n", result
        return {
            "launch": sandbox.launch_type,
            "bound_ms": (t_bound - t0) * 1000,
            "first_run_ms": (t_first - t_bound) * 1000,
            "total_ms": (t_first - t0) * 1000,
            "status_startup_ms": sandbox.startup_time_ms,
        }


def summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Quantiles per launch type actually taken (a claim sent for a warm member can still
    be bound cold: it is counted as what it was)."""
    out: dict[str, Any] = {}
    for launch in sorted({str(r["launch"]) for r in rows}):
        mine = [r for r in rows if str(r["launch"]) == launch]
        out[launch] = {
            key: quantiles([float(r[key]) for r in mine if r[key] is not None])
            for key in ("bound_ms", "first_run_ms", "total_ms", "status_startup_ms")
        }
    return out


async def main() -> None:
    ns, warm_name, cold_name = sys.argv[1:4]
    warm_n = int(os.environ.get("WARM", "30"))
    cold_n = int(os.environ.get("COLD", "8"))
    exec_n = int(os.environ.get("EXEC", "50"))
    refill_n = int(os.environ.get("REFILL", "4"))
    api = k8s_config.new_client_from_config(config_file=os.environ["KUBECONFIG"])
    custom = k8s.CustomObjectsApi(api)
    pool = int(template(custom, ns, warm_name)["spec"]["poolConfig"]["size"])

    warm = []
    for _ in range(warm_n):
        wait_ready(custom, ns, warm_name, pool)
        warm.append(await one_claim(ns, warm_name))
    cold = [await one_claim(ns, cold_name) for _ in range(cold_n)]

    wait_ready(custom, ns, warm_name, pool)
    execs: list[float] = []
    trues: list[float] = []
    async with SandboxClient(namespace=ns, template_name=warm_name) as sandbox:
        for _ in range(exec_n):
            t = time.monotonic()
            await sandbox.run("print(1)")
            execs.append((time.monotonic() - t) * 1000)
            # The same round trip without Python: what the exec path itself costs.
            t = time.monotonic()
            await sandbox.exec(["true"])
            trues.append((time.monotonic() - t) * 1000)

    # Refill: the cold template's pool from 0 to REFILL.
    t = time.monotonic()
    custom.patch_namespaced_custom_object(
        GROUP,
        VERSION,
        ns,
        "sandboxtemplates",
        cold_name,
        {"spec": {"poolConfig": {"size": refill_n}}},
    )
    wait_ready(custom, ns, cold_name, refill_n)
    refill_s = time.monotonic() - t

    print(
        json.dumps(
            {
                "warm_claims": summary(warm),
                "cold_claims": summary(cold),
                "exec_ms": quantiles(execs),
                "exec_true_ms": quantiles(trues),
                "refill": {
                    "sandboxes": refill_n,
                    "seconds": round(refill_s, 2),
                    "per_second": round(refill_n / refill_s, 2),
                },
            }
        )
    )


if __name__ == "__main__":
    asyncio.run(main())
