//go:build !unix

package p2pd

import "testing"

// decodeRaw is never called where there are no raw reads (haveRawRead).
func decodeRaw(t *testing.T, f Framing, data []byte, maxSize, bufSize, chunk int) ([][]byte, error) {
	t.Fatal("no raw reads on this system")
	return nil, nil
}
