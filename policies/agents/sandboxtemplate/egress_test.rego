package sandgate.agents.sandboxtemplate.egress_test

import rego.v1

import data.sandgate.agents.sandboxtemplate.egress

review(egress_rules) := {
	"kind": {"group": "extensions.agents.x-k8s.io", "version": "v1beta1", "kind": "SandboxTemplate"},
	"object": {"spec": {
		"podTemplate": {"spec": {"containers": [{"name": "c", "image": "python:3.11-slim"}]}},
		"networkPolicy": {"egress": egress_rules},
	}},
}

test_the_internet_with_the_metadata_range_excepted_passes if {
	r := review([{"to": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": ["169.254.0.0/16", "168.63.129.16/32", "100.100.100.200/32"]}}]}])
	count(egress.deny) == 0 with input.review as r
}

test_the_metadata_server_is_denied if {
	r := review([{"to": [{"ipBlock": {"cidr": "169.254.0.0/16"}}]}])
	count(egress.deny) == 1 with input.review as r
}

test_a_rule_without_to_is_denied_and_dns_alone_warned if {
	count(egress.deny) == 1 with input.review as review([{"ports": [{"port": 443}]}])
	r := review([{"ports": [{"port": 53, "protocol": "UDP"}]}])
	count(egress.deny) == 0 with input.review as r
	count(egress.warn) == 1 with input.review as r
}

test_ranges_outside_the_allowed_ones_are_denied if {
	r := review([{"to": [{"ipBlock": {"cidr": "192.0.2.0/24"}}], "ports": [{"port": 443}]}])
	count(egress.deny) == 1 with input.review as r with data.settings.allowedEgressCidrs as ["10.0.0.0/8"]
	count(egress.deny) == 0 with input.review as r with data.settings.allowedEgressCidrs as ["192.0.0.0/8"]
}
