package sandgate.agents.sandboxtemplate.images_test

import rego.v1

import data.sandgate.agents.sandboxtemplate.images

review(image) := {"object": {"spec": {"podTemplate": {"spec": {"containers": [{"name": "c", "image": image}]}}}}}

test_unpinned_images_warn if {
	count(images.warn) == 1 with input.review as review("python:3.11-slim")
	count(images.warn) == 0 with input.review as review("python@sha256:0123")
}

test_registries_outside_the_allow_list_are_denied if {
	r := review("evil.example.com/python:3.11")
	count(images.deny) == 1 with input.review as r with data.settings.allowedRegistries as ["docker.io"]
	count(images.deny) == 0 with input.review as review("python:3.11") with data.settings.allowedRegistries as ["docker.io"]
	count(images.deny) == 0 with input.review as r
}

test_sandgates_template_layout_is_not_read if {
	# spec.template is sandbox.gke.io's field, not agent-sandbox's.
	r := {"object": {"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "x:1"}]}}}}}
	count(images.warn) == 0 with input.review as r
}
