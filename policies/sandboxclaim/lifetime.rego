# A claim's sandbox does not live forever.
package sandgate.sandboxclaim.lifetime

import rego.v1

default max_ttl := 86400

max_ttl := data.settings.maxClaimTtlSeconds

deny contains msg if {
	ttl := input.review.object.spec.ttlSeconds
	ttl > max_ttl
	msg := sprintf("spec.ttlSeconds is %d, above the maximum lifetime of %d seconds", [ttl, max_ttl])
}

warn contains msg if {
	not input.review.object.spec.ttlSeconds
	msg := sprintf("spec.ttlSeconds is not set: the sandbox lives until the claim is deleted (at most %d seconds is allowed when set)", [max_ttl])
}
