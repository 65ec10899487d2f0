package p2pd

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"syscall"
	"time"
)

// findAddr returns addr's entry on the system's interfaces (in the calling
// thread's network namespace); a link-local address must be on its zone's
// interface.
func findAddr(addr netip.Addr) (IfAddr, bool) {
	ifs, err := Interfaces()
	if err != nil {
		return IfAddr{}, false
	}
	zone := addr.Zone()
	for _, ifc := range ifs {
		if zone != "" && zone != ifc.Name && zone != strconv.Itoa(ifc.Index) {
			continue
		}
		for _, a := range ifc.Addrs {
			if a.Addr.WithZone("") == addr.WithZone("") {
				return a, true
			}
		}
	}
	return IfAddr{}, false
}

// waitForAddr reports whether a failed bind should be tried again: the
// address was not available because it is a tentative IPv6 address, and
// it became usable within DADWait (or ctx). An IPv6 address added with DAD
// on cannot be bound for a second or two (EADDRNOTAVAIL).
func (c *PipeConfig) waitForAddr(ctx context.Context, addr netip.Addr, err error) bool {
	if c.DADWait < 0 || c.FreeBind || !addr.Is6() || !errors.Is(err, syscall.EADDRNOTAVAIL) {
		return false
	}
	wait := c.DADWait
	if wait == 0 {
		wait = DefaultDADWait
	}
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for {
		a, ok := findAddr(addr)
		switch {
		case !ok || a.Flags&AddrDADFailed != 0:
			return false
		case a.Usable():
			return true
		}
		select {
		case <-t.C:
		case <-ctx.Done():
			return false
		}
	}
}

// bindError is newBindError, explaining an IPv6 address that is tentative
// or failed DAD.
func (c *PipeConfig) bindError(f Family, proto Proto, ap netip.AddrPort, err error) *BindError {
	be := newBindError(f, proto, ap, err)
	be.Err = c.addrState(ap.Addr(), be.Err)
	return be
}

// addrState explains a bind that failed with EADDRNOTAVAIL on an IPv6
// address that is tentative or failed DAD.
func (c *PipeConfig) addrState(addr netip.Addr, err error) error {
	if !addr.Is6() || !errors.Is(err, syscall.EADDRNOTAVAIL) {
		return err
	}
	a, ok := findAddr(addr)
	switch {
	case !ok:
		return err
	case a.Flags&AddrDADFailed != 0:
		return fmt.Errorf("%w: %v: %w", ErrDADFailed, addr, err)
	case !a.Usable():
		return fmt.Errorf("%w: %v: %w", ErrTentative, addr, err)
	}
	return err
}
