# gVisor contains root, but a non-root sandbox is one fewer thing to trust.
package sandgate.pod.run_as_non_root

import rego.v1

spec := input.review.object.spec

warn contains msg if {
	not spec.securityContext.runAsNonRoot
	some c in spec.containers
	not c.securityContext.runAsNonRoot
	msg := sprintf("container %q may run as root: set securityContext.runAsNonRoot (pod or container)", [c.name])
}
