# Images come from allowed registries; unpinned images get a warning.
package sandgate.sandboxtemplate.images

import rego.v1

pod_spec := object.get(input.review.object, ["spec", "template", "spec"], {})

containers contains c if some c in object.get(pod_spec, "containers", [])

containers contains c if some c in object.get(pod_spec, "initContainers", [])

default allowed := []

allowed := data.settings.allowedRegistries

# The registry host of an image reference; Docker Hub when none is written.
registry(image) := host if {
	parts := split(image, "/")
	count(parts) > 1
	host_like(parts[0])
	host := parts[0]
} else := "docker.io"

host_like(s) if contains(s, ".")

host_like(s) if contains(s, ":")

host_like(s) if s == "localhost"

deny contains msg if {
	count(allowed) > 0
	some c in containers
	not registry(c.image) in allowed
	msg := sprintf("container %q: image %q comes from %s, which is not an allowed registry (%s)", [c.name, c.image, registry(c.image), concat(", ", allowed)])
}

warn contains msg if {
	some c in containers
	not contains(c.image, "@sha256:")
	msg := sprintf("container %q: image %q is not pinned by digest; retagging it changes what the sandbox runs", [c.name, c.image])
}
