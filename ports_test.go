package p2pd_test

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/p2pd/p2pd"
)

func TestParsePorts(t *testing.T) {
	tests := []struct {
		name  string
		in    string
		want  p2pd.Ports
		count int
		err   string // in the error; "" means no error
	}{
		{name: "seed", in: "10000,30000-30100", want: p2pd.Ports{p2pd.Port(10000), p2pd.Range(30000, 30100)}, count: 102},
		{name: "single", in: "80", want: p2pd.Ports{p2pd.Port(80)}, count: 1},
		{name: "spaces", in: " 80 , 90 - 91 ", want: p2pd.Ports{p2pd.Port(80), {90, 91}}, count: 3},
		{name: "bounds", in: "1,65535", want: p2pd.Ports{p2pd.Port(1), p2pd.Port(65535)}, count: 2},
		{name: "whole range", in: "1-65535", want: p2pd.Ports{{1, 65535}}, count: 65535},
		{name: "os chooses", in: "0", want: p2pd.Ports{p2pd.Port(0)}, count: 1},
		{name: "zero and others", in: "0,5", want: p2pd.Ports{p2pd.Port(0), p2pd.Port(5)}, count: 2},
		{name: "one-port range", in: "7-7", want: p2pd.Ports{p2pd.Port(7)}, count: 1},
		{name: "unsorted kept", in: "9,3-4", want: p2pd.Ports{p2pd.Port(9), {3, 4}}, count: 3},
		{name: "empty", in: "", err: "empty port list"},
		{name: "blank", in: "  ", err: "empty port list"},
		{name: "empty entry", in: "80,", err: "missing port number"},
		{name: "too big", in: "65536", err: "out of range"},
		{name: "huge", in: "99999999999999999999", err: "out of range"},
		{name: "negative", in: "-1", err: "missing port number"},
		{name: "sign", in: "+80", err: "not a decimal"},
		{name: "hex", in: "0x50", err: "not a decimal"},
		{name: "name", in: "http", err: "not a decimal"},
		{name: "reversed", in: "30100-30000", err: "start is after its end"},
		{name: "zero in range", in: "0-10", err: "port 0"},
		{name: "open range", in: "10-", err: "missing port number"},
		{name: "double dash", in: "1-2-3", err: "not a decimal"},
		{name: "duplicate", in: "80,80", err: "overlaps"},
		{name: "overlap", in: "10-20,15", err: "overlaps"},
		{name: "two zeros", in: "0,0", err: "overlaps"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := p2pd.ParsePorts(tt.in)
			if tt.err != "" {
				var pe *p2pd.PortError
				if err == nil || !errors.Is(err, p2pd.ErrBadPort) || !errors.As(err, &pe) ||
					!strings.Contains(err.Error(), tt.err) || !strings.HasPrefix(err.Error(), "p2pd: bad port") {
					t.Fatalf("ParsePorts(%q) = %v, %v; want a *PortError containing %q", tt.in, got, err, tt.err)
				}
				return
			}
			if err != nil || !slices.Equal(got, tt.want) {
				t.Fatalf("ParsePorts(%q) = %v, %v; want %v", tt.in, got, err, tt.want)
			}
			if n := got.Count(); n != tt.count {
				t.Errorf("Count = %d, want %d", n, tt.count)
			}
			if n := len(slices.Collect(got.All())); n != tt.count {
				t.Errorf("All yields %d ports, want %d", n, tt.count)
			}
		})
	}
}

// The seed says [10000, [30000, 30100]] makes 101 ports; inclusive ranges
// make it 102. This pins the exact count.
func TestPortsSeedCount(t *testing.T) {
	ps := p2pd.Ports{p2pd.Port(10000), p2pd.Range(30000, 30100)}
	if got := ps.Count(); got != 102 {
		t.Fatalf("Count = %d, want 102 (1 + 101 inclusive)", got)
	}
	all := slices.Collect(ps.All())
	if all[0] != 10000 || all[1] != 30000 || all[len(all)-1] != 30100 {
		t.Fatalf("All = %v...%v", all[:2], all[len(all)-1])
	}
	if s := ps.String(); s != "10000,30000-30100" {
		t.Fatalf("String = %q", s)
	}
}

func TestPortsValidate(t *testing.T) {
	for _, tt := range []struct {
		ps p2pd.Ports
		ok bool
	}{
		{nil, false},
		{p2pd.Ports{}, false},
		{p2pd.Ports{{5, 4}}, false},
		{p2pd.Ports{{0, 4}}, false},
		{p2pd.Ports{{4, 0}}, false},
		{p2pd.Ports{{0, 0}}, true},
		{p2pd.Ports{{1, 65535}}, true},
		{p2pd.Ports{{1, 10}, {10, 20}}, false},
		{p2pd.Ports{{11, 20}, {1, 10}}, true},
	} {
		err := tt.ps.Validate()
		if (err == nil) != tt.ok || (err != nil && !errors.Is(err, p2pd.ErrBadPort)) {
			t.Errorf("%v.Validate() = %v, want ok=%v", tt.ps, err, tt.ok)
		}
		if !tt.ok && tt.ps.Count() != 0 {
			t.Errorf("%v.Count() = %d for an invalid list, want 0", tt.ps, tt.ps.Count())
		}
	}
}

func TestPortsText(t *testing.T) {
	var ps p2pd.Ports
	if err := ps.UnmarshalText([]byte("1,3-5")); err != nil {
		t.Fatal(err)
	}
	b, err := ps.MarshalText()
	if err != nil || string(b) != "1,3-5" {
		t.Fatalf("MarshalText = %q, %v", b, err)
	}
	if _, err := (p2pd.Ports{{3, 1}}).MarshalText(); !errors.Is(err, p2pd.ErrBadPort) {
		t.Fatalf("MarshalText of a bad list: %v", err)
	}
	if err := ps.UnmarshalText([]byte("x")); !errors.Is(err, p2pd.ErrBadPort) {
		t.Fatalf("UnmarshalText(x): %v", err)
	}
}

// portsCorpus seeds FuzzParsePorts, one edge case per line.
var portsCorpus = []string{
	"10000,30000-30100", // the seed's example
	"0",                 // OS chooses
	"1",                 // lowest port
	"65535",             // highest port
	"65536",             // one past the highest
	"1-65535",           // every port
	"0-1",               // port 0 inside a range
	"5-4",               // reversed range
	"80,80",             // duplicate
	"10-20,20-30",       // ranges touching at one port
	" 7 , 8 - 9 ",       // spaces
	"007",               // leading zeros
	"",                  // empty
	",",                 // empty entries
	"-",                 // a dash alone
	"1--2",              // double dash
	"+1",                // sign
	"１",                 // full-width digit
	"9999999999999999",  // overflow
}

// FuzzParsePorts checks properties that must hold for any input: a parse
// succeeds exactly when the result is valid, printing then parsing gives the
// same list, and Count agrees with All.
func FuzzParsePorts(f *testing.F) {
	for _, s := range portsCorpus {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		ps, err := p2pd.ParsePorts(s)
		if err != nil {
			if !errors.Is(err, p2pd.ErrBadPort) || !strings.HasPrefix(err.Error(), "p2pd: ") {
				t.Fatalf("ParsePorts(%q): error %v does not wrap ErrBadPort", s, err)
			}
			return
		}
		if err := ps.Validate(); err != nil {
			t.Fatalf("ParsePorts(%q) = %v, which does not validate: %v", s, ps, err)
		}
		printed := ps.String()
		again, err := p2pd.ParsePorts(printed)
		if err != nil || !slices.Equal(again, ps) {
			t.Fatalf("round trip %q -> %v -> %q -> %v, %v", s, ps, printed, again, err)
		}
		n := 0
		for range ps.All() {
			n++
		}
		if n != ps.Count() || n < 1 || n > 65536 {
			t.Fatalf("ParsePorts(%q): All yields %d, Count %d", s, n, ps.Count())
		}
	})
}
