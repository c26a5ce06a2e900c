# Images come from allowed registries; unpinned images get a warning.
package sandgate.sandboxtemplate.images

import rego.v1

import data.sandgate.lib.images as lib

pod_spec := object.get(input.review.object, ["spec", "template", "spec"], {})

containers contains c if some c in object.get(pod_spec, "containers", [])

containers contains c if some c in object.get(pod_spec, "initContainers", [])

registry(image) := lib.registry(image)

deny contains msg if {
	count(lib.allowed) > 0 # no allow-list: nothing to look at
	some c in containers
	not lib.permitted(c.image)
	msg := sprintf("container %q: image %q comes from %s, which is not an allowed registry (%s)", [c.name, c.image, registry(c.image), concat(", ", lib.allowed)])
}

warn contains msg if {
	some c in containers
	not contains(c.image, "@sha256:")
	msg := sprintf("container %q: image %q is not pinned by digest; retagging it changes what the sandbox runs", [c.name, c.image])
}
