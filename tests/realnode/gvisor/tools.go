//go:build tools

// Package tools records the modules runsc and its shim need in go.sum.
package tools

import (
	_ "gvisor.dev/gvisor/runsc"
	_ "gvisor.dev/gvisor/shim"
)
