# Egress rules of a template, as written at spec.networkPolicy.egress: the same path in
# sandbox.gke.io's SandboxTemplate and agent-sandbox's, so both egress policies share
# these rules (`violations` deny, `cautions` warn).
package sandgate.lib.egress

import rego.v1

# What a sandbox must never reach: the node's link-local neighbours and every cloud's
# metadata and host-agent endpoints (they hand out the node's or the pod's credentials),
# IPv4 ones also in their NAT64 form (64:ff9b::/96). sandgate's built-in analysis judges
# the same list exactly, across rules and in every notation.
host_endpoints := [
	"169.254.0.0/16",
	"168.63.129.16/32",
	"100.100.100.200/32",
	"fe80::/10",
	"fd00:ec2::254/128",
	"fd00:ec2::23/128",
	"fd20:ce::254/128",
	"64:ff9b::a9fe:0/112",
	"64:ff9b::a83f:8110/128",
	"64:ff9b::6464:64c8/128",
]

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

# Any block that meets a host endpoint without excepting all of it. Two CIDRs meet
# exactly when one contains the other.
violations contains msg if {
	some i, rule in rules
	some j, peer in object.get(rule, "to", [])
	cidr := peer.ipBlock.cidr
	some endpoint in host_endpoints
	meets(cidr, endpoint)
	not excepted(object.get(peer.ipBlock, "except", []), endpoint)
	msg := sprintf("spec.networkPolicy.egress[%d].to[%d].ipBlock %s reaches the host endpoint %s (cloud metadata and credentials); add it to the except list", [i, j, cidr, endpoint])
}

meets(a, b) if net.cidr_contains(a, b)

meets(a, b) if net.cidr_contains(b, a)

excepted(excepts, endpoint) if {
	some e in excepts
	net.cidr_contains(e, endpoint)
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
