# Image-reference helpers shared by the template and pod image policies.
package sandgate.lib.images

import rego.v1

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

default allowed := []

allowed := data.settings.allowedRegistries

# Whether an image may be used: any image when no registries are listed.
permitted(_) if count(allowed) == 0

permitted(image) if registry(image) in allowed
