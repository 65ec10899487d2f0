package rtnl

import (
	"os"
	"testing"
)

// Dumps need no privilege, so these run everywhere on Linux.
func TestDump(t *testing.T) {
	fds := func() int {
		ents, err := os.ReadDir("/proc/self/fd")
		if err != nil {
			t.Fatal(err)
		}
		return len(ents)
	}
	before := fds()
	for _, f := range []uint8{0, FamilyIPv4, FamilyIPv6} {
		addrs, err := DumpAddrs(f)
		if err != nil {
			t.Fatalf("DumpAddrs(%d): %v", f, err)
		}
		routes, err := DumpRoutes(f)
		if err != nil {
			t.Fatalf("DumpRoutes(%d): %v", f, err)
		}
		for _, a := range addrs {
			if f != 0 && a.Family != f || !a.Local.IsValid() || a.Index == 0 {
				t.Errorf("DumpAddrs(%d): %+v", f, a)
			}
		}
		for _, r := range routes {
			if f != 0 && r.Family != f {
				t.Errorf("DumpRoutes(%d): %+v", f, r)
			}
		}
		if f == 0 && (len(addrs) == 0 || len(routes) == 0) {
			t.Errorf("DumpAddrs(0) gave %d addresses, DumpRoutes(0) %d routes; want some (loopback)", len(addrs), len(routes))
		}
	}
	for _, f := range []uint8{7, 28} {
		if _, err := DumpAddrs(f); err == nil {
			t.Errorf("DumpAddrs(%d): no error", f)
		}
		if _, err := DumpRoutes(f); err == nil {
			t.Errorf("DumpRoutes(%d): no error", f)
		}
	}
	if after := fds(); after != before {
		t.Errorf("open descriptors: %d before, %d after: a socket leaked", before, after)
	}
}
