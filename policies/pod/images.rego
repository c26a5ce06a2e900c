# A sandbox pod's images come from allowed registries, like a template's: pods created
# directly (not from a template) must not get around the registry allow-list.
package sandgate.pod.images

import rego.v1

import data.sandgate.lib.images as lib

spec := object.get(input.review.object, "spec", {})

containers contains c if some c in object.get(spec, "containers", [])

containers contains c if some c in object.get(spec, "initContainers", [])

containers contains c if some c in object.get(spec, "ephemeralContainers", [])

deny contains msg if {
	count(lib.allowed) > 0 # no allow-list: nothing to look at
	some c in containers
	not lib.permitted(c.image)
	msg := sprintf("container %q: image %q comes from %s, which is not an allowed registry (%s)", [c.name, c.image, lib.registry(c.image), concat(", ", lib.allowed)])
}
