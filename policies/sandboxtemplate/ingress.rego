# Nothing may reach a sandbox from everywhere.
package sandgate.sandboxtemplate.ingress

import rego.v1

rules := object.get(input.review.object, ["spec", "networkPolicy", "ingress"], [])

deny contains msg if {
	some i, rule in rules
	count(object.get(rule, "from", [])) == 0
	msg := sprintf("spec.networkPolicy.ingress[%d] has no `from`, so anything can connect to the sandbox; name the sources", [i])
}

deny contains msg if {
	some i, rule in rules
	some j, peer in object.get(rule, "from", [])
	peer.ipBlock.cidr in {"0.0.0.0/0", "::/0"}
	msg := sprintf("spec.networkPolicy.ingress[%d].from[%d].ipBlock %s lets every address connect to the sandbox", [i, j, peer.ipBlock.cidr])
}
