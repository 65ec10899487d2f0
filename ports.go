package p2pd

import (
	"iter"
	"slices"
	"strconv"
	"strings"
)

// PortError reports a port, a range or a list that cannot be used.
type PortError struct {
	Value  string // the offending entry as given ("70000", "30100-30000", "")
	Reason string // why, e.g. "out of range 1..65535"
}

func (e *PortError) Error() string {
	if e.Value == "" {
		return "p2pd: bad port: " + e.Reason
	}
	return "p2pd: bad port " + strconv.Quote(e.Value) + ": " + e.Reason
}

// Unwrap returns ErrBadPort.
func (e *PortError) Unwrap() error { return ErrBadPort }

// PortRange is an inclusive range of ports, Start through End. A single port
// is a range with Start == End (see [Port]). The range {0, 0} is port 0: the
// operating system chooses a free port when the listener is opened, and the
// listener reports the port it got. Otherwise 1 <= Start <= End.
type PortRange struct {
	Start, End uint16
}

// Port returns the range holding the single port p.
func Port(p uint16) PortRange { return PortRange{p, p} }

// Range returns the inclusive range start through end (see
// [PortRange.Validate] for which are valid).
func Range(start, end uint16) PortRange { return PortRange{Start: start, End: end} }

// Len returns the number of ports in the range (1 for port 0), or 0 when the
// range is invalid.
func (r PortRange) Len() int {
	if r.Validate() != nil {
		return 0
	}
	return int(r.End) - int(r.Start) + 1
}

// Validate returns a *PortError when the range is not {0, 0} and not
// 1 <= Start <= End.
func (r PortRange) Validate() error {
	switch {
	case r.Start == 0 && r.End == 0:
		return nil
	case r.Start == 0 || r.End == 0:
		return &PortError{Value: r.String(), Reason: "port 0 (OS chooses) cannot be part of a range"}
	case r.Start > r.End:
		return &PortError{Value: r.String(), Reason: "range start is after its end"}
	}
	return nil
}

// String returns "10000" for a single port and "30000-30100" for a range.
func (r PortRange) String() string {
	if r.Start == r.End {
		return strconv.Itoa(int(r.Start))
	}
	return strconv.Itoa(int(r.Start)) + "-" + strconv.Itoa(int(r.End))
}

// Ports is a list of ports and inclusive port ranges, P2PD's
// [10000, [30000, 30100]]. Write it as a literal,
//
//	p2pd.Ports{p2pd.Port(10000), p2pd.Range(30000, 30100)}
//
// or parse it with [ParsePorts]. A valid list is not empty, every entry is
// valid (see [PortRange.Validate]) and no port appears twice (ranges do not
// overlap; port 0 appears at most once). The order of the entries is kept.
type Ports []PortRange

// ParsePorts parses a comma-separated list of ports and inclusive ranges,
// such as "10000,30000-30100" or "0". Spaces around entries are allowed.
// Ports are decimal, 0..65535; "0" alone means the OS chooses. The result is
// valid (see [Ports]) or the error is a *PortError wrapping ErrBadPort.
// [Ports.String] prints a list that ParsePorts reads back unchanged.
func ParsePorts(s string) (Ports, error) {
	if strings.TrimSpace(s) == "" {
		return nil, &PortError{Reason: "empty port list"}
	}
	var ps Ports
	for entry := range strings.SplitSeq(s, ",") {
		e := strings.TrimSpace(entry)
		lo, hi, isRange := strings.Cut(e, "-")
		start, err := parsePort(e, lo)
		if err != nil {
			return nil, err
		}
		end := start
		if isRange {
			if end, err = parsePort(e, hi); err != nil {
				return nil, err
			}
		}
		ps = append(ps, PortRange{start, end})
	}
	if err := ps.Validate(); err != nil {
		return nil, err
	}
	return ps, nil
}

func parsePort(entry, s string) (uint16, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return 0, &PortError{Value: entry, Reason: "missing port number"}
	}
	for _, c := range s {
		if c < '0' || c > '9' {
			return 0, &PortError{Value: entry, Reason: "not a decimal port number"}
		}
	}
	n, err := strconv.ParseUint(s, 10, 16)
	if err != nil {
		return 0, &PortError{Value: entry, Reason: "out of range 1..65535"}
	}
	return uint16(n), nil
}

// Validate returns a *PortError wrapping ErrBadPort when the list is empty,
// holds an invalid range, or names a port twice.
func (ps Ports) Validate() error {
	if len(ps) == 0 {
		return &PortError{Reason: "empty port list"}
	}
	for _, r := range ps {
		if err := r.Validate(); err != nil {
			return err
		}
	}
	sorted := slices.Clone(ps)
	slices.SortFunc(sorted, func(a, b PortRange) int { return int(a.Start) - int(b.Start) })
	for i := 1; i < len(sorted); i++ {
		if sorted[i].Start <= sorted[i-1].End {
			return &PortError{Value: sorted[i].String(), Reason: "overlaps " + sorted[i-1].String() + " (a port may appear once)"}
		}
	}
	return nil
}

// Count returns the number of ports in a valid list (port 0 counts as one),
// or 0 for an invalid one. [10000, 30000-30100] holds 1 + 101 = 102 ports.
func (ps Ports) Count() int {
	if ps.Validate() != nil {
		return 0
	}
	n := 0
	for _, r := range ps {
		n += r.Len()
	}
	return n
}

// All yields every port of the list, entry by entry, each range in
// increasing order. It does not validate the list.
func (ps Ports) All() iter.Seq[uint16] {
	return func(yield func(uint16) bool) {
		for _, r := range ps {
			for p := int(r.Start); p <= int(r.End); p++ {
				if !yield(uint16(p)) {
					return
				}
			}
		}
	}
}

// String returns the list as ParsePorts reads it: "10000,30000-30100".
func (ps Ports) String() string {
	parts := make([]string, len(ps))
	for i, r := range ps {
		parts[i] = r.String()
	}
	return strings.Join(parts, ",")
}

// MarshalText returns String.
func (ps Ports) MarshalText() ([]byte, error) {
	if err := ps.Validate(); err != nil {
		return nil, err
	}
	return []byte(ps.String()), nil
}

// UnmarshalText parses like ParsePorts.
func (ps *Ports) UnmarshalText(b []byte) error {
	p, err := ParsePorts(string(b))
	if err != nil {
		return err
	}
	*ps = p
	return nil
}
