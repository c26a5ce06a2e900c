package sandgate.sandboxtemplate.egress_test

import rego.v1

import data.sandgate.sandboxtemplate.egress

review(egress_rules) := {"object": {"spec": {"networkPolicy": {"egress": egress_rules}}}}

test_article_dns_rule_warns_but_passes if {
	r := review([{"ports": [{"port": 53, "protocol": "UDP"}]}])
	count(egress.deny) == 0 with input.review as r
	count(egress.warn) == 1 with input.review as r
}

test_no_egress_at_all_passes if {
	count(egress.deny) == 0 with input.review as {"object": {"spec": {}}}
}

# One denial per IPv4 host endpoint reached.
test_everywhere_is_denied if {
	r := review([{"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}]}])
	count(egress.deny) == 3 with input.review as r
}

test_everywhere_except_metadata_passes if {
	r := review([{"to": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": ["169.254.0.0/16", "168.63.129.16/32", "100.100.100.200/32"]}}]}])
	count(egress.deny) == 0 with input.review as r
}

test_metadata_range_is_denied if {
	r := review([{"to": [{"ipBlock": {"cidr": "169.254.0.0/16"}}]}])
	count(egress.deny) == 1 with input.review as r
}

# All of IPv6, and each IPv6 host endpoint (NAT64 forms included).
test_ipv6_everywhere_is_denied if {
	r := review([{"to": [{"ipBlock": {"cidr": "::/0"}}]}])
	count(egress.deny) == 8 with input.review as r
	some msg in egress.deny with input.review as r
	contains(msg, "every IPv6 address")
}

test_ports_without_to_are_denied if {
	r := review([{"ports": [{"port": 443, "protocol": "TCP"}]}])
	count(egress.deny) == 1 with input.review as r
}

test_dns_range_without_to_is_denied if {
	r := review([{"ports": [{"port": 53, "endPort": 1000, "protocol": "UDP"}]}])
	count(egress.deny) == 1 with input.review as r
}

test_narrow_destination_passes if {
	r := review([{"to": [{"ipBlock": {"cidr": "10.20.0.0/16"}}], "ports": [{"port": 443}]}])
	count(egress.deny) == 0 with input.review as r
}

test_allowed_cidrs_are_enforced if {
	r := review([{"to": [{"ipBlock": {"cidr": "10.20.0.0/16"}}]}])
	count(egress.deny) == 1 with input.review as r with data.settings.allowedEgressCidrs as ["192.168.0.0/16"]
	count(egress.deny) == 0 with input.review as r with data.settings.allowedEgressCidrs as ["10.0.0.0/8"]
}

test_only_link_local_excepted_still_reaches_the_other_clouds if {
	r := review([{"to": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": ["169.254.0.0/16"]}}]}])
	count(egress.deny) == 2 with input.review as r
}

test_host_endpoints_are_denied_in_every_family if {
	every cidr in ["168.63.129.16/32", "100.64.0.0/10", "fe80::1/128", "fd00::/8", "64:ff9b::/96", "169.254.170.23/32"] {
		count(egress.deny) > 0 with input.review as review([{"to": [{"ipBlock": {"cidr": cidr}}]}])
	}
}

test_ranges_beside_host_endpoints_pass if {
	every cidr in ["169.255.0.0/16", "168.63.129.17/32", "fec0::/10", "fd00:ec2::24/128"] {
		count(egress.deny) == 0 with input.review as review([{"to": [{"ipBlock": {"cidr": cidr}}]}])
	}
}
