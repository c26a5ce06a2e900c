package sandgate.sandboxtemplate.runtime_class_test

import rego.v1

import data.sandgate.sandboxtemplate.runtime_class

test_gvisor_passes if {
	count(runtime_class.deny) == 0 with input.review as {"object": {"spec": {"runtimeClassName": "gvisor"}}}
}

test_default_passes if {
	count(runtime_class.deny) == 0 with input.review as {"object": {"spec": {}}}
}

test_runc_is_denied if {
	count(runtime_class.deny) == 1 with input.review as {"object": {"spec": {"runtimeClassName": "runc"}}}
	count(runtime_class.deny) == 1 with input.review as {"object": {"spec": {"template": {"spec": {"runtimeClassName": "runc"}}}}}
}
