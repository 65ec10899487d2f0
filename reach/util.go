package reach

import (
	"strconv"

	"github.com/p2pd/p2pd/internal/errtext"
)

func itoa(n int) string { return strconv.Itoa(n) }

// trim is err's text without "p2pd: ", for an error that says it itself.
func trim(err error) string { return errtext.Trim(err) }
