// Package errtext makes the text of p2pd's errors say "p2pd: " once, at the
// start, however deeply they wrap each other. Package p2pd and its
// subpackages share it.
package errtext

import (
	"errors"
	"fmt"
	"strings"
)

const prefix = "p2pd: "

// Errorf is fmt.Errorf for messages whose format starts with "p2pd: ": the
// p2pd errors it wraps lose their own "p2pd: ", so that the text says it
// once ("p2pd: bind ...: invalid value", not "p2pd: bind ...: p2pd: invalid
// value"). errors.Is and errors.As see through it.
//
// A message of a subpackage ("p2pd: stun: ...") also drops the label from
// the errors of that package it wraps ("p2pd: stun: probe: no answer", not
// "p2pd: stun: probe: stun: no answer").
func Errorf(format string, a ...any) error {
	err := fmt.Errorf(format, a...)
	rest, ok := strings.CutPrefix(err.Error(), prefix)
	if !ok || !strings.Contains(rest, prefix) {
		return err
	}
	label := ""
	for _, l := range labels {
		if strings.HasPrefix(rest, l+": ") {
			label = l
		}
	}
	return &textError{msg: prefix + TrimIn(label, errors.New(rest)), err: err}
}

// labels are the subpackages whose messages say "p2pd: <label>: ".
var labels = []string{"stun", "systemd", "reach"}

// Trim is err's text without "p2pd: " (leading or nested), for the text of
// an error that wraps err and says "p2pd: " itself.
func Trim(err error) string { return TrimIn("", err) }

// TrimIn is Trim for the text of an error of subpackage label, which says
// "p2pd: <label>: " itself: nested "p2pd: <label>: " goes too. A leading
// "<label>: " of err's own text stays.
func TrimIn(label string, err error) string {
	if err == nil {
		return "<nil>"
	}
	s := err.Error()
	if label != "" {
		head := ""
		if strings.HasPrefix(s, label+": ") {
			head, s = label+": ", s[len(label)+2:]
		}
		s = head + strings.ReplaceAll(s, prefix+label+": ", "")
	}
	return strings.ReplaceAll(s, prefix, "")
}

// textError is an error with its text made once.
type textError struct {
	msg string
	err error
}

func (e *textError) Error() string { return e.msg }
func (e *textError) Unwrap() error { return e.err }
