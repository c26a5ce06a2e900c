package sandgate.sandboxtemplate.images_test

import rego.v1

import data.sandgate.sandboxtemplate.images

review(image) := {"object": {"spec": {"template": {"spec": {"containers": [{"name": "c", "image": image}]}}}}}

test_any_registry_by_default if {
	count(images.deny) == 0 with input.review as review("python:3.11-slim")
}

test_unpinned_image_warns if {
	count(images.warn) == 1 with input.review as review("python:3.11-slim")
}

test_pinned_image_does_not_warn if {
	r := review("python@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef")
	count(images.warn) == 0 with input.review as r
}

test_registry_allow_list if {
	count(images.deny) == 1 with input.review as review("evil.example.com/miner:1") with data.settings.allowedRegistries as ["docker.io"]
	count(images.deny) == 0 with input.review as review("python:3.11-slim") with data.settings.allowedRegistries as ["docker.io"]
	count(images.deny) == 0 with input.review as review("us-docker.pkg.dev/p/r/img:1") with data.settings.allowedRegistries as ["us-docker.pkg.dev"]
}

test_registry_host_parsing if {
	images.registry("python:3.11") == "docker.io"
	images.registry("library/python:3.11") == "docker.io"
	images.registry("localhost:5000/x") == "localhost:5000"
	images.registry("gcr.io/p/x") == "gcr.io"
}
