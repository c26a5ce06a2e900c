"""The module name the article's scripts import (`from gke_agent_sandbox import
SandboxClient`): sandgate's SDK under that name."""

from sandgate_sandbox import *  # noqa: F403
from sandgate_sandbox import __all__ as __all__
