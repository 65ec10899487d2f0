package errtext

import (
	"errors"
	"testing"
)

func TestErrorf(t *testing.T) {
	inner := errors.New("p2pd: invalid value")
	cases := []struct {
		err   error
		want  string
		wraps bool
	}{
		{Errorf("p2pd: bind %q: %w", "x", inner), `p2pd: bind "x": invalid value`, true},
		{Errorf("p2pd: a: %w", Errorf("p2pd: b: %w", inner)), "p2pd: a: b: invalid value", true},
		{Errorf("p2pd: plain %d", 1), "p2pd: plain 1", false},
		{Errorf("no prefix: %w", inner), "no prefix: p2pd: invalid value", true},
	}
	for _, c := range cases {
		if got := c.err.Error(); got != c.want {
			t.Errorf("got %q, want %q", got, c.want)
		}
		if errors.Is(c.err, inner) != c.wraps {
			t.Errorf("%q does not wrap the inner error", c.err)
		}
	}
	if got := Trim(Errorf("p2pd: a: %w", inner)); got != "a: invalid value" {
		t.Errorf("Trim = %q", got)
	}
	if got := Trim(nil); got != "<nil>" {
		t.Errorf("Trim(nil) = %q", got)
	}
}

func TestErrorfLabel(t *testing.T) {
	inner := errors.New("p2pd: reach: gateway does not answer")
	err := Errorf("p2pd: reach: no mapping from %v: %w", "10.0.0.1", Errorf("p2pd: reach: pcp: %w", inner))
	if got, want := err.Error(), "p2pd: reach: no mapping from 10.0.0.1: pcp: gateway does not answer"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	if !errors.Is(err, inner) {
		t.Error("lost the inner error")
	}
	other := Errorf("p2pd: stun: probe: %w", errors.New("p2pd: reach: x"))
	if got, want := other.Error(), "p2pd: stun: probe: reach: x"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	if got, want := TrimIn("reach", inner), "gateway does not answer"; got != want {
		t.Errorf("TrimIn = %q, want %q", got, want)
	}
}
