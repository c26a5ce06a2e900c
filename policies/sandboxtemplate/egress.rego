# Egress of a SandboxTemplate must not reach everywhere, nor the cloud metadata and host endpoints
# (the rules: lib/egress.rego, shared with agent-sandbox's templates).
package sandgate.sandboxtemplate.egress

import rego.v1

import data.sandgate.lib.egress

deny contains msg if some msg in egress.violations

warn contains msg if some msg in egress.cautions
