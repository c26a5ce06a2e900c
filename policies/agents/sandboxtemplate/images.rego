# Images of a kubernetes-sigs/agent-sandbox SandboxTemplate come from allowed registries;
# unpinned images get a warning (as for sandbox.gke.io's templates).
package sandgate.agents.sandboxtemplate.images

import rego.v1

import data.sandgate.lib.images as lib

pod_spec := object.get(input.review.object, ["spec", "podTemplate", "spec"], {})

containers contains c if some c in object.get(pod_spec, "containers", [])

containers contains c if some c in object.get(pod_spec, "initContainers", [])

deny contains msg if {
	count(lib.allowed) > 0
	some c in containers
	not lib.permitted(c.image)
	msg := sprintf("container %q: image %q comes from %s, which is not an allowed registry (%s)", [c.name, c.image, lib.registry(c.image), concat(", ", lib.allowed)])
}

warn contains msg if {
	some c in containers
	not contains(c.image, "@sha256:")
	msg := sprintf("container %q: image %q is not pinned by digest; retagging it changes what the sandbox runs", [c.name, c.image])
}
