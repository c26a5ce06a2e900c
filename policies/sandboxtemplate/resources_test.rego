package sandgate.sandboxtemplate.resources_test

import rego.v1

import data.sandgate.sandboxtemplate.resources

review(limits) := {"object": {"spec": {"template": {"spec": {"containers": [{"name": "c", "resources": {"limits": limits}}]}}}}}

caps := {"cpu": "4", "memory": "8Gi"}

test_article_limits_pass if {
	count(resources.deny) == 0 with input.review as review({"cpu": "1", "memory": "1Gi"}) with data.settings.maxResources as caps
}

test_cpu_above_cap_is_denied if {
	count(resources.deny) == 1 with input.review as review({"cpu": "8"}) with data.settings.maxResources as caps
}

test_memory_above_cap_is_denied if {
	count(resources.deny) == 1 with input.review as review({"memory": "16Gi"}) with data.settings.maxResources as caps
}

test_millicores_compare_as_numbers if {
	count(resources.deny) == 0 with input.review as review({"cpu": "3500m"}) with data.settings.maxResources as caps
	count(resources.deny) == 1 with input.review as review({"cpu": "4500m"}) with data.settings.maxResources as caps
}
