package mmsg

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func fdOf(t *testing.T, c *net.UDPConn) syscall.RawConn {
	t.Helper()
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	return rc
}

// recvAll reads until want datagrams arrived or 5 s passed.
func recvAll(t *testing.T, c *net.UDPConn, b *RecvBatch, want int) (msgs [][]byte, from []netip.AddrPort, trunc []bool) {
	t.Helper()
	rc := fdOf(t, c)
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	for len(msgs) < want {
		var n int
		var rerr error
		err := rc.Read(func(fd uintptr) bool {
			n, rerr = b.Recv(fd)
			return rerr != unix.EAGAIN
		})
		if err != nil {
			t.Fatalf("after %d of %d: %v", len(msgs), want, err)
		}
		if rerr != nil {
			t.Fatal(rerr)
		}
		for i := range n {
			m, f, _, tr := b.Msg(i)
			msgs = append(msgs, bytes.Clone(m))
			from = append(from, f)
			trunc = append(trunc, tr)
		}
	}
	return
}

func sendAll(t *testing.T, c *net.UDPConn, s *SendBatch) {
	t.Helper()
	rc := fdOf(t, c)
	for s.Pending() > 0 {
		var serr error
		if err := rc.Write(func(fd uintptr) bool {
			serr = s.Send(fd)
			return serr != unix.EAGAIN
		}); err != nil {
			t.Fatal(err)
		}
		if serr != nil {
			t.Fatal(serr)
		}
	}
}

func TestBatchRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		net, addr string
		family    int
	}{{"udp4", "127.0.0.1:0", unix.AF_INET}, {"udp6", "[::1]:0", unix.AF_INET6}} {
		t.Run(tc.net, func(t *testing.T) {
			rx, err := net.ListenUDP(tc.net, net.UDPAddrFromAddrPort(netip.MustParseAddrPort(tc.addr)))
			if err != nil {
				t.Skip("no loopback for", tc.net, err)
			}
			defer rx.Close()
			tx, err := net.ListenUDP(tc.net, net.UDPAddrFromAddrPort(netip.MustParseAddrPort(tc.addr)))
			if err != nil {
				t.Fatal(err)
			}
			defer tx.Close()
			to := rx.LocalAddr().(*net.UDPAddr).AddrPort()

			// 70 datagrams through a batch of 16: several Send calls and
			// refills; sizes 0..69, one empty.
			s := NewSendBatch(16, tc.family)
			var want [][]byte
			for i := range 70 {
				m := bytes.Repeat([]byte{byte(i)}, i)
				if !s.Add(m, to, 0) {
					if !s.Full() {
						t.Fatalf("Add %d refused on a batch that is not full", i)
					}
					sendAll(t, tx, s)
					if !s.Add(m, to, 0) {
						t.Fatalf("Add %d refused after Send", i)
					}
				}
				want = append(want, m)
			}
			sendAll(t, tx, s)

			b := GetRecv(8, 64, false)
			defer PutRecv(b)
			got, from, trunc := recvAll(t, rx, b, len(want))
			txAddr := tx.LocalAddr().(*net.UDPAddr).AddrPort()
			for i := range want {
				wantLen := min(len(want[i]), 64)
				if !bytes.Equal(got[i], want[i][:wantLen]) {
					t.Fatalf("datagram %d: got %d bytes %x, want %d", i, len(got[i]), got[i], wantLen)
				}
				if trunc[i] != (len(want[i]) > 64) {
					t.Errorf("datagram %d of %d bytes: trunc %v", i, len(want[i]), trunc[i])
				}
				if from[i] != txAddr {
					t.Errorf("datagram %d from %v, want %v", i, from[i], txAddr)
				}
			}
		})
	}
}

func TestAddRefusesOtherFamily(t *testing.T) {
	s := NewSendBatch(4, unix.AF_INET)
	if s.Add([]byte("x"), netip.MustParseAddrPort("[2001:db8::1]:53"), 0) {
		t.Error("IPv6 destination queued on an IPv4 socket")
	}
	if s.Add([]byte("x"), netip.AddrPort{}, 0) {
		t.Error("invalid destination queued")
	}
	s6 := NewSendBatch(4, unix.AF_INET6)
	if !s6.Add([]byte("x"), netip.MustParseAddrPort("192.0.2.1:53"), 0) {
		t.Error("IPv4 destination refused on an IPv6 socket (it goes IPv4-mapped)")
	}
	if got, _, _ := ParseSockaddr(sockaddrBytes(&s6.names[0]), int(s6.hdrs[0].Hdr.Namelen)); got != netip.MustParseAddrPort("192.0.2.1:53") {
		t.Errorf("mapped sockaddr decodes to %v", got)
	}
	if s.Pending() != 0 || s6.Pending() != 1 {
		t.Errorf("pending %d and %d, want 0 and 1", s.Pending(), s6.Pending())
	}
}

func TestSendErrorSkips(t *testing.T) {
	tx, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Skip("no IPv4 loopback:", err)
	}
	defer tx.Close()
	rx, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer rx.Close()
	to := rx.LocalAddr().(*net.UDPAddr).AddrPort()
	s := NewSendBatch(4, unix.AF_INET)
	s.Add([]byte("ok1"), to, 0)
	// The kernel refuses port 0 (EINVAL) without sending anything: the
	// batch stops there.
	s.Add([]byte("bad"), netip.AddrPortFrom(to.Addr(), 0), 0)
	s.Add([]byte("ok2"), to, 0)
	rc := fdOf(t, tx)
	errs := sendSkipping(rc, s)
	if len(errs) != 1 || !errors.Is(errs[0], unix.EINVAL) {
		t.Fatalf("errors %v, want one EINVAL", errs)
	}
	b := GetRecv(4, 16, false)
	defer PutRecv(b)
	got, _, _ := recvAll(t, rx, b, 2)
	if string(got[0]) != "ok1" || string(got[1]) != "ok2" {
		t.Errorf("got %q", got)
	}
}

func TestRecvPool(t *testing.T) {
	a := GetRecv(3, 100, false)
	if a.Len() != 3 || len(a.mem) != 300 {
		t.Fatalf("batch of %d slots, %d bytes", a.Len(), len(a.mem))
	}
	// Put back and taken again on one goroutine: reused. (Under the race
	// detector sync.Pool drops a Put in four at random: a few tries.)
	reused := false
	for range 10 {
		PutRecv(a)
		b := GetRecv(3, 100, false)
		if reused = b == a; reused {
			break
		}
		a = b
	}
	if !reused {
		t.Error("pool did not reuse the batch")
	}
	PutRecv(a)
	if c := GetRecv(0, 1<<30, false); c.Len() != 1 || c.slot != MaxSlot {
		t.Errorf("clamping: %d slots of %d", c.Len(), c.slot)
	} else {
		PutRecv(c)
	}
	if c := GetRecv(1<<20, 1, false); c.Len() != MaxBatch || c.slot != 1 {
		t.Errorf("clamping: %d slots of %d", c.Len(), c.slot)
	} else {
		PutRecv(c)
	}
}

func sa4(port uint16, a [4]byte) []byte {
	b := make([]byte, unix.SizeofSockaddrInet4)
	binary.NativeEndian.PutUint16(b, unix.AF_INET)
	binary.BigEndian.PutUint16(b[2:], port)
	copy(b[4:], a[:])
	return b
}

func sa6(port uint16, a [16]byte, scope uint32) []byte {
	b := make([]byte, unix.SizeofSockaddrInet6)
	binary.NativeEndian.PutUint16(b, unix.AF_INET6)
	binary.BigEndian.PutUint16(b[2:], port)
	copy(b[8:], a[:])
	binary.NativeEndian.PutUint32(b[24:], scope)
	return b
}

func TestParseSockaddr(t *testing.T) {
	ll := netip.MustParseAddr("fe80::1")
	mapped := netip.MustParseAddr("::ffff:192.0.2.7")
	for _, tc := range []struct {
		name  string
		b     []byte
		n     int
		want  string
		scope uint32
		ok    bool
	}{
		{"v4", sa4(4209, [4]byte{192, 0, 2, 1}), 16, "192.0.2.1:4209", 0, true},
		{"v6 scoped", sa6(53, ll.As16(), 7), 28, "[fe80::1]:53", 7, true},
		{"v4-mapped unmapped", sa6(1, mapped.As16(), 0), 28, "192.0.2.7:1", 0, true},
		{"v4 short", sa4(1, [4]byte{1, 2, 3, 4}), 7, "", 0, false},
		{"v6 short", sa6(1, ll.As16(), 0), 27, "", 0, false},
		{"n beyond buffer", sa4(1, [4]byte{1, 2, 3, 4})[:8], 16, "", 0, false},
		{"unknown family", []byte{0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14}, 16, "", 0, false},
		{"empty", nil, 0, "", 0, false},
		{"negative n", sa4(1, [4]byte{1, 2, 3, 4}), -1, "", 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ap, scope, ok := ParseSockaddr(tc.b, tc.n)
			if ok != tc.ok || scope != tc.scope || (ok && ap.String() != tc.want) {
				t.Errorf("got %v %d %v, want %s %d %v", ap, scope, ok, tc.want, tc.scope, tc.ok)
			}
		})
	}
}

// FuzzParseSockaddr: no panic, and whatever parses encodes back to the
// same address.
func FuzzParseSockaddr(f *testing.F) {
	f.Add(sa4(80, [4]byte{127, 0, 0, 1}), 16)
	f.Add(sa6(443, netip.MustParseAddr("2001:db8::1").As16(), 3), 28)
	f.Add([]byte{}, 0)
	f.Fuzz(func(t *testing.T, b []byte, n int) {
		ap, scope, ok := ParseSockaddr(b, n)
		if !ok {
			return
		}
		fam := unix.AF_INET6
		if binary.NativeEndian.Uint16(b) == unix.AF_INET {
			fam = unix.AF_INET
		}
		var sa Sockaddr
		nl, ok := putSockaddr(&sa, fam, ap, scope)
		if !ok {
			t.Fatalf("%v (family %d) does not encode back", ap, fam)
		}
		back, bscope, ok := ParseSockaddr(sockaddrBytes(&sa), int(nl))
		if !ok || back != ap || bscope != scope {
			t.Fatalf("round trip %v %d → %v %d", ap, scope, back, bscope)
		}
	})
}

func Example() {
	fmt.Println(Supported)
	// Output: true
}

func TestPktinfoRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		src     string
		ifindex int
	}{{"192.0.2.7", 3}, {"2001:db8::7", 5}, {"fe80::1", 2}} {
		var b [CtrlSize]byte
		src := netip.MustParseAddr(tc.src)
		n := PutPktinfo(b[:], src, tc.ifindex)
		if n == 0 || n > CtrlSize {
			t.Fatalf("%v: length %d", src, n)
		}
		pi, ok := ParsePktinfo(b[:n])
		if !ok || pi.Local != src || pi.IfIndex != tc.ifindex {
			t.Errorf("%v %d: parsed %+v %v", src, tc.ifindex, pi, ok)
		}
	}
	if n := PutPktinfo(make([]byte, CtrlSize), netip.Addr{}, 1); n != 0 {
		t.Errorf("no source: length %d, want 0", n)
	}
	for _, bad := range [][]byte{nil, make([]byte, 8), make([]byte, 16), {255, 255, 255, 255, 255, 255, 255, 255, 0, 0, 0, 0, 8, 0, 0, 0}} {
		if pi, ok := ParsePktinfo(bad); ok {
			t.Errorf("ParsePktinfo(%x) = %+v", bad, pi)
		}
	}
}

// TestPktinfoReceived: the kernel's own IP_PKTINFO, on a wildcard socket,
// names the address the datagram was sent to.
func TestPktinfoReceived(t *testing.T) {
	rx, err := net.ListenUDP("udp4", &net.UDPAddr{})
	if err != nil {
		t.Fatal(err)
	}
	defer rx.Close()
	rc := fdOf(t, rx)
	rc.Control(func(fd uintptr) { err = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_PKTINFO, 1) })
	if err != nil {
		t.Fatal(err)
	}
	port := rx.LocalAddr().(*net.UDPAddr).Port
	tx, err := net.DialUDP("udp4", nil, &net.UDPAddr{IP: net.IPv4(127, 0, 0, 3), Port: port})
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Close()
	tx.Write([]byte("to 127.0.0.3"))
	b := GetRecv(2, 64, true)
	defer PutRecv(b)
	recvAll(t, rx, b, 1)
	pi, ok := ParsePktinfo(b.Ctrl(0))
	if !ok || pi.Dst != netip.MustParseAddr("127.0.0.3") || pi.IfIndex == 0 {
		t.Fatalf("pktinfo %+v %v, want destination 127.0.0.3 on an interface", pi, ok)
	}
}

// FuzzParsePktinfo: no panic on any control data.
func FuzzParsePktinfo(f *testing.F) {
	var b [CtrlSize]byte
	f.Add(b[:PutPktinfo(b[:], netip.MustParseAddr("10.0.0.1"), 2)])
	f.Add(b[:PutPktinfo(b[:], netip.MustParseAddr("2001:db8::1"), 2)])
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		ParsePktinfo(b)
	})
}

// sendSkipping sends everything s holds through rc, skipping each datagram
// the kernel refuses (sendAll fails the test instead), and returns the
// refusals in order.
func sendSkipping(rc syscall.RawConn, s *SendBatch) []error {
	var errs []error
	for s.Pending() > 0 {
		var serr error
		rc.Write(func(fd uintptr) bool {
			serr = s.Send(fd)
			return serr != unix.EAGAIN
		})
		if serr != nil {
			errs = append(errs, serr)
			s.Skip()
		}
	}
	return errs
}
