package sandgate.pod.run_as_non_root_test

import rego.v1

import data.sandgate.pod.run_as_non_root

test_root_warns if {
	count(run_as_non_root.warn) == 1 with input.review as {"object": {"spec": {"containers": [{"name": "c"}]}}}
}

test_pod_level_non_root_is_quiet if {
	r := {"object": {"spec": {"securityContext": {"runAsNonRoot": true}, "containers": [{"name": "c"}]}}}
	count(run_as_non_root.warn) == 0 with input.review as r
}

test_container_level_non_root_is_quiet if {
	r := {"object": {"spec": {"containers": [{"name": "c", "securityContext": {"runAsNonRoot": true}}]}}}
	count(run_as_non_root.warn) == 0 with input.review as r
}
