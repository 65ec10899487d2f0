package metrics

import (
	"strings"

	"github.com/p2pd/p2pd"
)

// invalidError wraps p2pd.ErrInvalid; its text says "p2pd: " once.
type invalidError string

func (e invalidError) Error() string {
	return "p2pd: metrics: " + strings.TrimPrefix(p2pd.ErrInvalid.Error(), "p2pd: ") + ": " + string(e)
}

func (invalidError) Unwrap() error { return p2pd.ErrInvalid }
