//go:build unix

// Package socktest makes the loopback sockets that tests hand to
// Daemon.Adopt, the way a service manager or a parent process would, and
// checks them from outside: they echo while served and are free after.
package socktest

import (
	"bytes"
	"errors"
	"net"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/p2pd/p2pd/internal/testnet"
	"golang.org/x/sys/unix"
)

// Loopback opens TCP listeners and UDP sockets on 127.0.0.1 and, when the
// host has IPv6 loopback, on ::1, and returns them as files named "tcp4",
// "udp4", "tcp6", "udp6" (names[i] is files[i].Name()), with their
// addresses. The net sockets are closed: the files hold the only
// descriptors. The files are closed when the test ends.
func Loopback(t testing.TB) (names []string, addrs []netip.AddrPort, files []*os.File) {
	t.Helper()
	for _, c := range []struct{ name, addr string }{
		{"tcp4", "127.0.0.1:0"}, {"udp4", "127.0.0.1:0"}, {"tcp6", "[::1]:0"}, {"udp6", "[::1]:0"},
	} {
		var f *os.File
		var a string
		var err error
		if strings.HasPrefix(c.name, "tcp") {
			var l net.Listener
			if l, err = net.Listen(c.name, c.addr); err == nil {
				a = l.Addr().String()
				f, err = l.(*net.TCPListener).File()
				l.Close()
			}
		} else {
			var pc net.PacketConn
			if pc, err = net.ListenPacket(c.name, c.addr); err == nil {
				a = pc.LocalAddr().String()
				f, err = pc.(*net.UDPConn).File()
				pc.Close()
			}
		}
		if err != nil {
			if strings.HasSuffix(c.name, "6") {
				t.Logf("no IPv6 loopback (%v): IPv4 only", err)
				continue
			}
			testnet.SkipUnlessCI(t, "loopback: %v", err)
		}
		names = append(names, c.name)
		addrs = append(addrs, netip.MustParseAddrPort(a))
		files = append(files, Named(t, f, c.name))
	}
	return names, addrs, files
}

// Named returns f's descriptor as a file named name, as a service manager
// names what it passes, and closes f. The file is closed when the test ends.
//
// It reads f's descriptor through SyscallConn, not f.Fd(): Fd makes the
// socket blocking, for every duplicate of it, and a listener already served
// from another duplicate would then block in accept(2) for good.
func Named(t testing.TB, f *os.File, name string) *os.File {
	t.Helper()
	rc, err := f.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	fd := -1
	if cerr := rc.Control(func(u uintptr) { fd, err = unix.Dup(int(u)) }); cerr != nil {
		err = cerr
	}
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	unix.CloseOnExec(fd)
	nf := os.NewFile(uintptr(fd), name)
	t.Cleanup(func() { nf.Close() })
	return nf
}

// CheckEcho sends a message to every address and waits for it back; the
// network is the first three letters of its name.
func CheckEcho(t testing.TB, names []string, addrs []netip.AddrPort) {
	t.Helper()
	for i, a := range addrs {
		msg := []byte("hello " + names[i])
		network := names[i][:3]
		c, err := net.DialTimeout(network, a.String(), 5*time.Second)
		if err != nil {
			t.Fatalf("%s %v: %v", names[i], a, err)
		}
		got := make([]byte, 64)
		var n int
		for try := 0; try < 5; try++ {
			if _, err = c.Write(msg); err != nil {
				break
			}
			c.SetReadDeadline(time.Now().Add(2 * time.Second))
			if n, err = c.Read(got); err == nil || network == "tcp" {
				break
			}
		}
		c.Close()
		if err != nil || !bytes.Equal(got[:n], msg) {
			t.Fatalf("%s %v: echo %q, %v; want %q", names[i], a, got[:n], err, msg)
		}
	}
}

// CheckFree checks that nothing holds the sockets any more: TCP connections
// are refused, and the UDP port can be bound again.
func CheckFree(t testing.TB, names []string, addrs []netip.AddrPort) {
	t.Helper()
	for i, a := range addrs {
		if strings.HasPrefix(names[i], "tcp") {
			if c, err := net.DialTimeout("tcp", a.String(), 2*time.Second); err == nil {
				c.Close()
				t.Errorf("%s %v still accepts connections", names[i], a)
			}
			continue
		}
		pc, err := net.ListenPacket("udp", a.String())
		if err != nil {
			t.Errorf("%s %v still bound: %v", names[i], a, err)
			continue
		}
		pc.Close()
	}
}

// IsClosed reports whether f has been closed. (Fd on an open file would
// make it blocking; on a closed one it only says so.)
func IsClosed(f *os.File) bool {
	_, err := f.Stat()
	return errors.Is(err, os.ErrClosed)
}
