package p2pd

import (
	"sync"
	"testing"
)

// A signal's channel is closed once it fires, whether it was asked for
// before, after, or at the same time (-race).
func TestSignal(t *testing.T) {
	closed := func(c <-chan struct{}) bool {
		select {
		case <-c:
			return true
		default:
			return false
		}
	}
	var before signal
	c := before.wait()
	if closed(c) || before.wait() != c {
		t.Fatal("an unfired signal's channel is closed, or not the same twice")
	}
	before.fire()
	if !closed(c) || !closed(before.wait()) {
		t.Fatal("fire did not close the channel asked for before")
	}
	var after signal
	after.fire()
	if !closed(after.wait()) {
		t.Fatal("a signal fired before anything waited is not closed")
	}
	for range 200 {
		var s signal
		var wg sync.WaitGroup
		chans := make([]<-chan struct{}, 4)
		for i := range chans {
			wg.Go(func() { chans[i] = s.wait() })
		}
		wg.Go(s.fire)
		wg.Wait()
		for _, c := range chans {
			if !closed(c) {
				t.Fatal("a wait racing fire got a channel that stays open")
			}
		}
	}
}
