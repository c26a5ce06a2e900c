package sandgate.sandboxclaim.lifetime_test

import rego.v1

import data.sandgate.sandboxclaim.lifetime

test_short_lifetime_passes if {
	r := {"object": {"spec": {"templateName": "t", "ttlSeconds": 600}}}
	count(lifetime.deny) == 0 with input.review as r
	count(lifetime.warn) == 0 with input.review as r
}

test_long_lifetime_is_denied if {
	count(lifetime.deny) == 1 with input.review as {"object": {"spec": {"ttlSeconds": 864000}}}
}

test_no_lifetime_warns if {
	r := {"object": {"spec": {"templateName": "t"}}}
	count(lifetime.deny) == 0 with input.review as r
	count(lifetime.warn) == 1 with input.review as r
}
