package p2pd

import (
	"context"
	"net"
	"net/netip"
	"testing"
	"time"
)

// TestSubDroppedOnlyGrows: Stats().SubDropped is a counter: the drops of a
// subscription still count after it is unsubscribed.
func TestSubDroppedOnlyGrows(t *testing.T) {
	srv, err := Listen(context.Background(), UDP, loopRoute(t, IPv4), &PipeConfig{QueueSize: 1, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	sub, err := srv.Subscribe("", netip.AddrPort{})
	if err != nil {
		t.Fatal(err)
	}
	c, err := net.Dial("udp", srv.LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	deadline := time.Now().Add(waitFor)
	for srv.Stats().SubDropped < 3 && time.Now().Before(deadline) {
		c.Write([]byte("x")) // the queue holds one: the rest are dropped
		time.Sleep(time.Millisecond)
	}
	before := srv.Stats().SubDropped
	if before < 3 {
		t.Fatalf("SubDropped = %d: the queue did not overflow", before)
	}
	srv.Unsubscribe(sub)
	if after := srv.Stats().SubDropped; after < before {
		t.Fatalf("SubDropped went from %d to %d after Unsubscribe", before, after)
	}
}
