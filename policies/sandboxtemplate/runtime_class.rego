# Every template runs its sandboxes under the configured runtime class (gVisor).
package sandgate.sandboxtemplate.runtime_class

import rego.v1

default wanted := "gvisor"

wanted := data.settings.runtimeClassName

# The CRD schema defaults an absent runtimeClassName to gvisor.
default runtime := "gvisor"

runtime := input.review.object.spec.runtimeClassName

deny contains msg if {
	runtime != wanted
	msg := sprintf("spec.runtimeClassName is %q; sandbox templates must use %q", [runtime, wanted])
}

deny contains msg if {
	pod_runtime := input.review.object.spec.template.spec.runtimeClassName
	pod_runtime != wanted
	msg := sprintf("spec.template.spec.runtimeClassName is %q; sandbox templates must use %q", [pod_runtime, wanted])
}
