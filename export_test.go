package p2pd

import (
	"log/slog"
	"sync/atomic"
)

// Internals for the tests of package p2pd_test.
var (
	InterfacesNet    = interfacesNet
	DefaultIndexDial = defaultIndexDial
)

// NewLevelCounter is a slog.Handler that counts the records of level min
// and up in n.
func NewLevelCounter(min slog.Level, n *atomic.Int32) slog.Handler { return levelCounter{min, n} }
