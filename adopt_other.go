//go:build !unix

package p2pd

import "os"

// socketProto: there is no portable way to ask a descriptor what it is.
func socketProto(*os.File) (Proto, int, string, error) { return 0, -1, "", ErrUnsupported }
