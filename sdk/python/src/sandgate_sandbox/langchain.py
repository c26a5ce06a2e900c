"""A LangChain tool equivalent to the article's `execute_code_safely`: the code runs as
Python in a fresh sandbox (one claim per call), passed as one argument, so quotes in it
are fine (the article's version builds `python3 -c '{code}'` and breaks on the first
single quote).

    from sandgate_sandbox.langchain import execute_code_safely
    await execute_code_safely.ainvoke({"code": "print(2 + 2)"})
"""

from __future__ import annotations

import os

from langchain_core.tools import tool

from .client import SandboxClient


@tool
async def execute_code_safely(code: str) -> str:
    """Execute Python code in a secure GKE sandbox. Use for data analysis tasks."""
    async with SandboxClient(
        namespace=os.environ.get("SANDGATE_NAMESPACE", "default"),
        template_name=os.environ.get("SANDGATE_TEMPLATE", "agent-execution-template"),
    ) as sandbox:
        result = await sandbox.run(code)
        if result.exit_code != 0:
            return f"Error: {result.stderr}"
        return result.stdout
