//go:build !linux

package p2pd

// netns: elsewhere a process has one network stack.
type netns struct{}

func currentNetns() (*netns, error) { return &netns{}, nil }
func (n *netns) isForeign() bool    { return false }
func (n *netns) enter() error       { return nil }
func (n *netns) close()             {}
