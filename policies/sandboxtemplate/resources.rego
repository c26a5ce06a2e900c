# Container limits of a template stay within the operator's caps.
package sandgate.sandboxtemplate.resources

import rego.v1

pod_spec := object.get(input.review.object, ["spec", "template", "spec"], {})

containers contains [field, i, c] if {
	some field in ["containers", "initContainers"]
	some i, c in object.get(pod_spec, field, [])
}

default caps := {}

caps := data.settings.maxResources

amount("cpu", q) := units.parse(q)

amount(r, q) := units.parse_bytes(q) if r != "cpu"

deny contains msg if {
	some [field, i, c] in containers
	some r, limit in object.get(c, ["resources", "limits"], {})
	cap := caps[r]
	amount(r, format_int_or_string(limit)) > amount(r, cap)
	msg := sprintf("spec.template.spec.%s[%d].resources.limits.%s is %v, above the cap of %v", [field, i, r, limit, cap])
}

format_int_or_string(q) := sprintf("%v", [q])
