//go:build !linux

package p2pd

import (
	"context"
	"errors"
	"testing"
)

// Fan-out is Linux only: more than one socket is refused elsewhere, and a
// negative Sockets binds one.
func TestFanoutUnsupported(t *testing.T) {
	for _, proto := range []Proto{TCP, UDP} {
		_, err := Listen(context.Background(), proto, loopRoute(t, IPv4), &PipeConfig{Sockets: 2})
		var be *BindError
		if !errors.As(err, &be) || !errors.Is(err, ErrUnsupported) {
			t.Errorf("%v, Sockets 2: %v, want ErrUnsupported", proto, err)
		}
		p := listen(t, proto, loopRoute(t, IPv4), &PipeConfig{Sockets: -1})
		if p.fan != nil {
			t.Errorf("%v, Sockets -1: %d sockets, want 1", proto, len(p.fan.socks))
		}
	}
}
