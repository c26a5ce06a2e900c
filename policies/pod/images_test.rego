package sandgate.pod.images_test

import rego.v1

import data.sandgate.pod.images

review(spec) := {"object": {"spec": spec}}

one(image) := review({"containers": [{"name": "c", "image": image}]})

test_any_registry_by_default if {
	count(images.deny) == 0 with input.review as one("evil.example.com/miner:1")
}

test_registry_allow_list if {
	count(images.deny) == 1 with input.review as one("evil.example.com/miner:1") with data.settings.allowedRegistries as ["docker.io"]
	count(images.deny) == 0 with input.review as one("python:3.11-slim") with data.settings.allowedRegistries as ["docker.io"]
}

# Init and ephemeral containers are containers too: no side door.
test_init_and_ephemeral_containers_are_checked if {
	r := review({
		"containers": [{"name": "c", "image": "python:3.11"}],
		"initContainers": [{"name": "i", "image": "evil.example.com/a:1"}],
		"ephemeralContainers": [{"name": "e", "image": "evil.example.com/b:1"}],
	})
	count(images.deny) == 2 with input.review as r with data.settings.allowedRegistries as ["docker.io"]
}

# A registry named as a path segment or a lookalike host is not the registry.
test_registry_lookalikes_are_denied if {
	count(images.deny) == 1 with input.review as one("evil.example.com/docker.io/python:3") with data.settings.allowedRegistries as ["docker.io"]
	count(images.deny) == 1 with input.review as one("docker.io.evil.example.com/python:3") with data.settings.allowedRegistries as ["docker.io"]
	count(images.deny) == 1 with input.review as one("localhost:5000/python:3") with data.settings.allowedRegistries as ["docker.io"]
}

test_pod_without_spec_is_quiet if {
	count(images.deny) == 0 with input.review as {"object": {}} with data.settings.allowedRegistries as ["docker.io"]
}
