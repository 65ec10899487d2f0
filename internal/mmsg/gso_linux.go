package mmsg

import (
	"encoding/binary"

	"golang.org/x/sys/unix"
)

// UDP segmentation offload (UDP_SEGMENT, Linux 4.18): a SendBatch given a
// GSO coalesces datagrams of equal size (the last may be shorter) queued in
// a row for one destination from one source into one sendmmsg entry, which
// the kernel sends as one buffer down the stack and cuts into the original
// datagrams at the device, or on loopback at the receiving socket. Every
// datagram leaves as it was queued, in order.

const (
	// maxSegs is how many datagrams one entry carries (UDP_MAX_SEGMENTS
	// of the oldest kernels with UDP_SEGMENT).
	maxSegs = 64
	// maxGSOBytes bounds an entry's payload: one IPv4 packet's.
	maxGSOBytes = 65535 - 20 - 8
	// safeSegment is a segment size every IPv6 path carries (1280-byte
	// MTU less the IPv6 and UDP headers): where the first refusal of a
	// larger one leaves the limit.
	safeSegment = 1280 - 40 - 8
	// segSpace is the room of a UDP_SEGMENT control message (a uint16).
	segSpace = (unix.SizeofCmsghdr + 2 + ptrSize - 1) &^ (ptrSize - 1)
	// pktinfo6Space is the room of an IPV6_PKTINFO, the larger PKTINFO.
	pktinfo6Space = (unix.SizeofCmsghdr + unix.SizeofInet6Pktinfo + ptrSize - 1) &^ (ptrSize - 1)
)

// The control room of one entry holds a PKTINFO and a UDP_SEGMENT.
var _ [CtrlSize - pktinfo6Space - segSpace]struct{}

// GSO is one socket's segmentation offload state. It is not safe for
// concurrent use: it belongs to whoever serializes the socket's
// SendBatch (a SendBatch uses it from Add and Send).
type GSO struct {
	max     int    // the largest segment to coalesce; 0: none
	sent    uint64 // entries of several datagrams sent
	refused uint64 // entries the kernel refused (sent one by one instead)
}

// NewGSO returns the state of a socket fd that takes UDP_SEGMENT, nil for
// one that does not (an old kernel).
func NewGSO(fd uintptr) *GSO {
	if _, err := unix.GetsockoptInt(int(fd), unix.IPPROTO_UDP, unix.UDP_SEGMENT); err != nil {
		return nil
	}
	return &GSO{max: maxGSOBytes}
}

// Max is the largest segment size coalesced; 0 once GSO is off.
func (g *GSO) Max() int { return g.max }

// Sent is how many entries of several datagrams the kernel took.
func (g *GSO) Sent() uint64 { return g.sent }

// Refused is how many the kernel refused.
func (g *GSO) Refused() uint64 { return g.refused }

// refuse learns from the kernel's refusal, err, of an entry of segments of
// size bytes. EINVAL or EMSGSIZE for a segment larger than safeSegment
// is a path MTU below it: coalesce only segments up to safeSegment. The
// same for a smaller one, or EIO (a device that cannot checksum), turns
// GSO off. Other errors are the datagrams', not GSO's.
func (g *GSO) refuse(err unix.Errno, size int) {
	g.refused++
	switch {
	case (err == unix.EINVAL || err == unix.EMSGSIZE) && size > safeSegment:
		g.max = min(g.max, safeSegment)
	case err == unix.EINVAL || err == unix.EMSGSIZE || err == unix.EIO || err == unix.EOPNOTSUPP || err == unix.ENOPROTOOPT:
		g.max = 0
	}
}

// putSegment writes into b (at least segSpace bytes) a UDP_SEGMENT control
// message for segments of size bytes and returns its room.
func putSegment(b []byte, size int) int {
	clear(b[:segSpace])
	l := unix.SizeofCmsghdr + 2
	if ptrSize == 8 {
		binary.NativeEndian.PutUint64(b, uint64(l))
	} else {
		binary.NativeEndian.PutUint32(b, uint32(l))
	}
	binary.NativeEndian.PutUint32(b[ptrSize:], unix.IPPROTO_UDP)
	binary.NativeEndian.PutUint32(b[ptrSize+4:], unix.UDP_SEGMENT)
	binary.NativeEndian.PutUint16(b[unix.SizeofCmsghdr:], uint16(size))
	return segSpace
}
