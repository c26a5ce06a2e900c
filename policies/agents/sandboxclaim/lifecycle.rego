# A kubernetes-sigs/agent-sandbox SandboxClaim should end: without
# spec.lifecycle.shutdownTime its sandbox runs until the claim is deleted, and with the
# default shutdownPolicy (Retain) the Sandbox is kept when the claim expires.
package sandgate.agents.sandboxclaim.lifecycle

import rego.v1

lifecycle := object.get(input.review.object, ["spec", "lifecycle"], {})

warn contains msg if {
	not lifecycle.shutdownTime
	msg := "spec.lifecycle.shutdownTime is not set: the sandbox lives until the claim is deleted"
}

warn contains msg if {
	lifecycle.shutdownTime
	object.get(lifecycle, "shutdownPolicy", "Retain") == "Retain"
	msg := "spec.lifecycle.shutdownPolicy is Retain: the Sandbox and its pod are kept after shutdownTime; Delete frees them"
}
