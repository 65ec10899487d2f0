// Package errtext makes the text of p2pd's errors say "p2pd: " once, at the
// start, however deeply they wrap each other. Package p2pd and its
// subpackages share it.
package errtext

import (
	"fmt"
	"strings"
)

const prefix = "p2pd: "

// Errorf is fmt.Errorf for messages whose format starts with "p2pd: ": the
// p2pd errors it wraps lose their own "p2pd: ", so that the text says it
// once ("p2pd: bind ...: invalid value", not "p2pd: bind ...: p2pd: invalid
// value"). errors.Is and errors.As see through it.
func Errorf(format string, a ...any) error {
	err := fmt.Errorf(format, a...)
	if rest, ok := strings.CutPrefix(err.Error(), prefix); ok && strings.Contains(rest, prefix) {
		return &textError{msg: prefix + strings.ReplaceAll(rest, prefix, ""), err: err}
	}
	return err
}

// Trim is err's text without "p2pd: " (leading or nested), for the text of
// an error that wraps err and says "p2pd: " itself.
func Trim(err error) string {
	if err == nil {
		return "<nil>"
	}
	return strings.ReplaceAll(err.Error(), prefix, "")
}

// textError is an error with its text made once.
type textError struct {
	msg string
	err error
}

func (e *textError) Error() string { return e.msg }
func (e *textError) Unwrap() error { return e.err }
