# Egress of a kubernetes-sigs/agent-sandbox SandboxTemplate (extensions.agents.x-k8s.io):
# the same rules as sandbox.gke.io's templates (lib/egress.rego), on its
# spec.networkPolicy.egress. (A template naming none is closed to DNS by sandgate's
# mutation before this runs.)
package sandgate.agents.sandboxtemplate.egress

import rego.v1

import data.sandgate.lib.egress

deny contains msg if some msg in egress.violations

warn contains msg if some msg in egress.cautions
