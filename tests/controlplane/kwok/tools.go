//go:build tools

// Package tools pins kwok (fake kubelet) for scripts/build-controlplane.sh.
package tools

import (
	_ "sigs.k8s.io/kwok/cmd/kwok"
)
