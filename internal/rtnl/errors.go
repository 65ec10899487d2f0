package rtnl

import "errors"

// ErrOverflow reports notifications lost because they came faster than
// they were read (Monitor.Next): the caller should read the whole state
// again.
var ErrOverflow = errors.New("rtnl: notifications lost (receive buffer overflow)")

// errDumpIntr reports a dump the kernel marked inconsistent.
var errDumpIntr = errors.New("rtnl: dump interrupted by a concurrent change")

// errStop ends a walk early; walk does not return it.
var errStop = errors.New("rtnl: stop walking")
