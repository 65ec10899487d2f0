//go:build !linux

package netns

// NS: elsewhere a process has one network stack.
type NS struct{}

// Current returns the one network stack.
func Current() (*NS, error) { return &NS{}, nil }

// Foreign is always false.
func (n *NS) Foreign() bool { return false }

// Enter does nothing.
func (n *NS) Enter() error { return nil }

// Close does nothing.
func (n *NS) Close() {}
