# Serves sandgate's policies (policies/) from a stock OPA as a Kubernetes admission
# webhook, for the benchmark that compares the two. The apiserver POSTs its
# AdmissionReview to OPA's v0 data API, which takes the body as `input` and answers with
# the document as is:
#   mutating webhook:   https://HOST/v0/data/sandgate_opa/mutate
#   validating webhook: https://HOST/v0/data/sandgate_opa/validate
# Both documents are always defined (OPA answers 404 for an undefined one).
#
# Not under `sandgate.`: sandgate's loader and tests treat every package there as a policy.
package sandgate_opa

import rego.v1

# sandgate's built-in defaults (src/config.rs); keep in step with the sandgate compared.
runtime_class := "gvisor"

resource_defaults := {
	"cpu": {"request": "500m", "limit": "1"},
	"memory": {"request": "512Mi", "limit": "1Gi"},
	"ephemeral-storage": {"request": "1Gi", "limit": "2Gi"},
}

# Left alone even if a request from them arrives (the webhook selectors exclude them too).
excluded_namespaces := {"kube-system", "sandgate-system"}

req := input.request

in_scope if not req.namespace in excluded_namespaces

admission_review(response) := {
	"apiVersion": "admission.k8s.io/v1",
	"kind": "AdmissionReview",
	"response": response,
}

# ---------------------------------------------------------------------------------
# validate: the policies of the request's kind, on the object as it will be stored.

validate := admission_review(object.union_n([
	{"uid": req.uid, "allowed": count(denials) == 0},
	denied_status,
	warning_list,
]))

kind := lower(req.kind.kind)

judged if {
	in_scope
	req.operation in {"CREATE", "UPDATE"}
	kind != "lib" # sandgate.lib.* are helpers, not policies
}

# The policies are written against `input.review`, Gatekeeper style; ours is the
# AdmissionReview itself. [policy, message] pairs, sorted as sandgate lists them.
# What the `with` expressions use is bound before them: inside one, this package's rules
# (kind, req) are evaluated under the replaced input, and so (OPA 1.22.4, inside a
# comprehension) is an inline {"review": input.request}; the policies would then see an
# empty review and deny nothing.
denials := sort([[sprintf("%s.%s", [k, name]), text(msg)] |
	judged
	k := kind
	policy_input := {"review": req}
	some name, msg
	data.sandgate[k][name].deny[msg] with input as policy_input
])

warnings := sort([[sprintf("%s.%s", [k, name]), text(msg)] |
	judged
	k := kind
	policy_input := {"review": req}
	some name, msg
	data.sandgate[k][name].warn[msg] with input as policy_input
])

# A message is a string or an object with a `msg` field (the other fields are details).
text(m) := m if is_string(m)

else := m.msg if is_string(m.msg)

else := json.marshal(object.get(m, "msg", m)) if is_object(m)

else := json.marshal(m)

# Worded as sandgate words them, so both servers send the same bytes.
denied_status := {"status": {
	"code": 403,
	"reason": "Forbidden",
	"message": sprintf("sandgate denied %s: %s", [subject, concat("; ", reasons)]),
}} if {
	count(denials) > 0
	reasons := [sprintf("policy %s: %s", [p, m]) | some [p, m] in denials]
} else := {}

warning_list := {"warnings": [sprintf("policy %s: %s", [p, m]) | some [p, m] in warnings]} if {
	count(warnings) > 0
} else := {}

subject := sprintf("%s %s/%s", [kind, req.namespace, object_name]) if req.namespace != ""

else := sprintf("%s %s", [kind, object_name])

# Absent on CREATE when the creator used generateName.
object_name := req.name if req.name != ""

else := object.get(req, ["object", "metadata", "generateName"], "")

# ---------------------------------------------------------------------------------
# mutate: fill in what a sandbox pod lacks, never overriding what its creator chose
# (a wrong value is left for validation to deny). Which pods are sandbox pods is decided
# by the webhook configuration's selectors (a label, or the namespace's label, which is
# not in the request), so every pod CREATE that arrives here is one.

mutate := admission_review(object.union(
	{"uid": req.uid, "allowed": true},
	patch_fields,
))

patch_fields := {"patchType": "JSONPatch", "patch": base64.encode(json.marshal(patch))} if {
	count(patch) > 0
} else := {}

pod := req.object

spec := pod.spec

sandbox_pod_create if {
	in_scope
	req.operation == "CREATE"
	req.resource.group == ""
	req.resource.resource == "pods"
	object.get(req, "subResource", "") == ""
	not pod.metadata.annotations["kubernetes.io/config.mirror"] # static pods are the kubelet's
}

# "Unset" as sandgate's typed Pod reads it: absent or null.
unset(x, key) if object.get(x, key, null) == null

# The object at x[key], or {} when unset.
field(x, key) := x[key] if is_object(x[key])

else := {}

# A whole-value `add` replaces an existing member (RFC 6902), so each op below writes
# the merged value of one field: no separate cases for missing parents.
patch contains {"op": "add", "path": "/metadata/labels", "value": labels} if {
	sandbox_pod_create
	unset(field(pod.metadata, "labels"), "sandbox.gke.io/sandbox")
	labels := object.union(field(pod.metadata, "labels"), {"sandbox.gke.io/sandbox": "true"})
}

patch contains {"op": "add", "path": "/spec/runtimeClassName", "value": runtime_class} if {
	sandbox_pod_create
	unset(spec, "runtimeClassName")
}

patch contains {"op": "add", "path": "/spec/automountServiceAccountToken", "value": false} if {
	sandbox_pod_create
	unset(spec, "automountServiceAccountToken")
}

patch contains {"op": "add", "path": "/spec/securityContext", "value": psc} if {
	sandbox_pod_create
	unset(field(spec, "securityContext"), "seccompProfile")
	psc := object.union(field(spec, "securityContext"), {"seccompProfile": {"type": "RuntimeDefault"}})
}

# Pods cannot be created with ephemeral containers, so these two lists are all there is.
containers contains [sprintf("/spec/%s/%d", [list, i]), c] if {
	sandbox_pod_create
	some list in ["containers", "initContainers"]
	some i, c in object.get(spec, list, [])
}

patch contains {"op": "add", "path": concat("", [path, "/securityContext"]), "value": sc} if {
	some [path, c] in containers
	sc := container_security(field(c, "securityContext"))
	sc != object.get(c, "securityContext", null)
}

patch contains {"op": "add", "path": concat("", [path, "/resources"]), "value": res} if {
	some [path, c] in containers
	res := container_resources(field(c, "resources"))
	res != object.get(c, "resources", null)
}

container_security(sc) := object.union_n([sc, no_escalation(sc), drop_all(sc), seccomp(sc)])

# The apiserver refuses allowPrivilegeEscalation=false beside privileged=true.
no_escalation(sc) := {"allowPrivilegeEscalation": false} if {
	unset(sc, "allowPrivilegeEscalation")
	object.get(sc, "privileged", null) != true
} else := {}

drop_all(sc) := {} if "ALL" in field(sc, "capabilities").drop

else := {"capabilities": object.union(field(sc, "capabilities"), {"drop": array.concat(drops, ["ALL"])})} if {
	drops := object.get(field(sc, "capabilities"), "drop", []) # null: none
	is_array(drops)
} else := {"capabilities": object.union(field(sc, "capabilities"), {"drop": ["ALL"]})}

# A pod-level profile the creator chose (e.g. Localhost) is inherited, not overridden.
seccomp(sc) := {"seccompProfile": {"type": "RuntimeDefault"}} if {
	unset(sc, "seccompProfile")
	unset(field(spec, "securityContext"), "seccompProfile")
} else := {}

# Missing limits, then missing requests, keeping request <= limit so the apiserver
# accepts the result.
container_resources(res) := object.union(res, {"limits": limits, "requests": requests}) if {
	limits := object.union(field(res, "limits"), {r: default_limit(r, res) |
		some r, _ in resource_defaults
		unset(field(res, "limits"), r)
	})
	requests := object.union(field(res, "requests"), {r: default_request(r, limits[r]) |
		some r, _ in resource_defaults
		unset(field(res, "requests"), r)
	})
}

# A request above the default limit becomes the limit (validation still caps it).
default_limit(r, res) := res.requests[r] if {
	units.parse(res.requests[r]) > units.parse(resource_defaults[r].limit)
} else := resource_defaults[r].limit

default_request(r, limit) := limit if {
	units.parse(limit) < units.parse(resource_defaults[r].request)
} else := resource_defaults[r].request

# The ServiceAccount admission plugin runs before webhooks and has already mounted the
# token the pod did not opt out of; opting it out must take that mount back out.
injected_token_volumes contains v.name if {
	sandbox_pod_create
	unset(spec, "automountServiceAccountToken")
	some v in object.get(spec, "volumes", [])
	startswith(v.name, "kube-api-access-")
	some s in v.projected.sources
	not unset(s, "serviceAccountToken")
}

patch contains keep_only("/spec/volumes", kept) if {
	count(injected_token_volumes) > 0
	kept := [v | some v in spec.volumes; not v.name in injected_token_volumes]
}

patch contains keep_only(concat("", [path, "/volumeMounts"]), kept) if {
	count(injected_token_volumes) > 0
	some [path, c] in containers
	some mount in object.get(c, "volumeMounts", [])
	mount.name in injected_token_volumes
	kept := [m | some m in c.volumeMounts; not m.name in injected_token_volumes]
}

keep_only(path, []) := {"op": "remove", "path": path}

keep_only(path, kept) := {"op": "add", "path": path, "value": kept} if count(kept) > 0
