//go:build !unix

package p2pd

import "os"

const activationSupported = false

func setCloexec(int) error { return ErrUnsupported }

func socketProto(*os.File) (Proto, string, error) { return 0, "", ErrUnsupported }
