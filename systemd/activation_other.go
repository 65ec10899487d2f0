//go:build !unix

package systemd

import "github.com/p2pd/p2pd"

const activationSupported = false

func setCloexec(int) error { return p2pd.ErrUnsupported }
