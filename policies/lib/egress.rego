# Egress rules of a template, as written at spec.networkPolicy.egress: the same path in
# sandbox.gke.io's SandboxTemplate and agent-sandbox's, so both egress policies share
# these rules (`violations` deny, `cautions` warn).
package sandgate.lib.egress

import rego.v1

metadata_ip := "169.254.169.254"

rules := object.get(input.review.object, ["spec", "networkPolicy", "egress"], [])

default allowed_cidrs := []

allowed_cidrs := data.settings.allowedEgressCidrs

# A rule without `to` reaches every address on its ports.
violations contains msg if {
	some i, rule in rules
	count(object.get(rule, "to", [])) == 0
	not dns_only(rule)
	msg := sprintf("spec.networkPolicy.egress[%d] has no `to`, so it reaches every address; name its destinations", [i])
}

# The article's own rule: DNS with no `to` is tolerated, with a warning.
cautions contains msg if {
	some i, rule in rules
	count(object.get(rule, "to", [])) == 0
	dns_only(rule)
	msg := sprintf("spec.networkPolicy.egress[%d] lets DNS (port 53) reach any resolver; a `to` naming kube-dns keeps DNS from being a way out", [i])
}

dns_only(rule) if {
	ports := object.get(rule, "ports", [])
	count(ports) > 0
	every p in ports {
		is_dns_port(p.port)
		not p.endPort
	}
}

is_dns_port(p) if p == 53

is_dns_port(p) if p == "53"

# Any IPv4 block that contains the metadata server without excepting it.
violations contains msg if {
	some i, rule in rules
	some j, peer in object.get(rule, "to", [])
	cidr := peer.ipBlock.cidr
	net.cidr_contains(cidr, metadata_ip)
	not excepts_metadata(object.get(peer.ipBlock, "except", []))
	msg := sprintf("spec.networkPolicy.egress[%d].to[%d].ipBlock %s reaches the cloud metadata server; add 169.254.0.0/16 to its except list", [i, j, cidr])
}

excepts_metadata(excepts) if {
	some e in excepts
	net.cidr_contains(e, metadata_ip)
}

# All of IPv6.
violations contains msg if {
	some i, rule in rules
	some j, peer in object.get(rule, "to", [])
	peer.ipBlock.cidr == "::/0"
	msg := sprintf("spec.networkPolicy.egress[%d].to[%d].ipBlock ::/0 reaches every IPv6 address; name the ranges the sandbox needs", [i, j])
}

# Operator-allowed destinations, when configured.
violations contains msg if {
	count(allowed_cidrs) > 0
	some i, rule in rules
	some j, peer in object.get(rule, "to", [])
	cidr := peer.ipBlock.cidr
	not cidr_allowed(cidr)
	msg := sprintf("spec.networkPolicy.egress[%d].to[%d].ipBlock %s is outside the allowed egress ranges %v", [i, j, cidr, allowed_cidrs])
}

cidr_allowed(cidr) if {
	some a in allowed_cidrs
	net.cidr_contains(a, cidr)
}
