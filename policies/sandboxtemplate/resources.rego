# Container limits of a template stay within the operator's caps.
package sandgate.sandboxtemplate.resources

import rego.v1

pod_spec := object.get(input.review.object, ["spec", "template", "spec"], {})

containers contains {"field": field, "i": i, "c": c} if {
	some field in ["containers", "initContainers"]
	some i, c in object.get(pod_spec, field, [])
}

default caps := {}

caps := data.settings.maxResources

# One definition with an `else`: the two branches cannot both give a value.
amount(r, q) := units.parse(q) if {
	r == "cpu"
} else := units.parse_bytes(q)

deny contains msg if {
	some e in containers
	some r, limit in object.get(e.c, ["resources", "limits"], {})
	cap := caps[r]
	amount(r, as_text(limit)) > amount(r, cap)
	msg := sprintf("spec.template.spec.%s[%d].resources.limits.%s is %v, above the cap of %v", [e.field, e.i, r, limit, cap])
}

# Quantities may be written as numbers (cpu: 2) or strings (cpu: "2").
as_text(q) := sprintf("%v", [q])
