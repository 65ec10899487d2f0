//go:build !linux

package p2pd

import (
	"net"
	"net/netip"
)

// udpBatch is Linux's batched UDP I/O; elsewhere datagrams are read and
// sent one by one.
type udpBatch struct{}

func (p *Pipe) initBatch()                                         {}
func (p *Pipe) newBatch(*net.UDPConn, uint16) *udpBatch            { return nil }
func (p *Pipe) udpBatchLoop(*udpBatch) error                       { return p.udpReadLoop(p.udp, 0) }
func recvDropped(*net.UDPConn) uint64                              { return 0 }
func (u *udpBatch) queue(*Pipe, []byte, netip.AddrPort, Peer) bool { return false }
func (u *udpBatch) close()                                         {}
func (u *udpBatch) direct(*Pipe, []byte, netip.AddrPort, Peer) (bool, error) {
	return false, nil
}
func (u *udpBatch) holdsBuffers() bool                                { return false }
func (u *udpBatch) sendDropped() uint64                               { return 0 }
func (p *Pipe) numericZone(to netip.AddrPort) (netip.AddrPort, error) { return resolveZone(to) }

// watcher is Linux's watchdog of blocked UDP batches (udp_watch_linux.go).
type watcher struct{}
