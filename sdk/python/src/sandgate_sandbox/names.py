"""Every name of sandgate's API the SDK reads or writes (sandgate's own
`src/contract.rs` and `src/crd/` are the source; DESIGN.md fixes them)."""

GROUP = "sandbox.gke.io"
VERSION = "v1"
TEMPLATES = "sandboxtemplates"
CLAIMS = "sandboxclaims"
CLAIM_KIND = "SandboxClaim"

# Claim status phases and launch types.
PHASE_BOUND = "Bound"
PHASE_FAILED = "Failed"
PHASE_EXPIRED = "Expired"
LAUNCH_WARM = "warm"
LAUNCH_COLD = "cold"

# Claim conditions sandgate's reconciler sets.
CONDITION_TEMPLATE_NOT_FOUND = "TemplateNotFound"
CONDITION_POOL_EXHAUSTED = "PoolExhausted"

# The container code runs in when the pod has several: the first one.
PYTHON = ("python3", "-c")
