package sandgate.agents.sandboxclaim.lifecycle_test

import rego.v1

import data.sandgate.agents.sandboxclaim.lifecycle

review(spec) := {"object": {"spec": spec}}

test_a_claim_without_an_end_warns if {
	count(lifecycle.warn) == 1 with input.review as review({"warmPoolRef": {"name": "p"}})
}

test_an_end_that_keeps_the_sandbox_warns if {
	r := review({"lifecycle": {"shutdownTime": "2026-12-03T00:00:00Z"}})
	count(lifecycle.warn) == 1 with input.review as r
}

test_an_end_that_deletes_passes if {
	r := review({"lifecycle": {"shutdownTime": "2026-12-03T00:00:00Z", "shutdownPolicy": "Delete"}})
	count(lifecycle.warn) == 0 with input.review as r
}
