# A warm pool is a set of running pods: its size is bounded.
package sandgate.sandboxtemplate.pool

import rego.v1

default max_size := 50

max_size := data.settings.maxPoolSize

deny contains msg if {
	size := input.review.object.spec.poolConfig.size
	size > max_size
	msg := sprintf("spec.poolConfig.size is %d, above the maximum of %d warm sandboxes", [size, max_size])
}
