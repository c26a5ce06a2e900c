package sandgate.sandboxtemplate.ingress_test

import rego.v1

import data.sandgate.sandboxtemplate.ingress

review(rules) := {"object": {"spec": {"networkPolicy": {"ingress": rules}}}}

test_no_ingress_passes if {
	count(ingress.deny) == 0 with input.review as {"object": {"spec": {}}}
}

test_from_everywhere_is_denied if {
	count(ingress.deny) == 1 with input.review as review([{"ports": [{"port": 8080}]}])
	count(ingress.deny) == 1 with input.review as review([{"from": [{"ipBlock": {"cidr": "0.0.0.0/0"}}]}])
}

test_named_source_passes if {
	r := review([{"from": [{"podSelector": {"matchLabels": {"app": "agent"}}}]}])
	count(ingress.deny) == 0 with input.review as r
}
