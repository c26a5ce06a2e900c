package sandgate.sandboxtemplate.pool_test

import rego.v1

import data.sandgate.sandboxtemplate.pool

test_article_pool_passes if {
	count(pool.deny) == 0 with input.review as {"object": {"spec": {"poolConfig": {"size": 5}}}}
}

test_huge_pool_is_denied if {
	count(pool.deny) == 1 with input.review as {"object": {"spec": {"poolConfig": {"size": 10000}}}}
}

test_limit_comes_from_settings if {
	count(pool.deny) == 1 with input.review as {"object": {"spec": {"poolConfig": {"size": 5}}}} with data.settings.maxPoolSize as 2
}
