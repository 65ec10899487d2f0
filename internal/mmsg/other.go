//go:build !linux

package mmsg

// Supported reports whether batched reads and writes exist here.
const Supported = false
