package p2pd

import "net/netip"

// MsgCallback receives every message of a pipe, as http.Handler receives
// every request of a server. One callback serves TCP and UDP, clients and
// servers alike.
//
// The contract:
//
//   - MsgCB is called concurrently from several goroutines: one per UDP
//     socket (a server pipe may have several: PipeConfig.Sockets) and one
//     per TCP connection. Calls for one UDP socket, or for one TCP
//     connection, are sequential and in arrival order; so are those for
//     one UDP peer, whose datagrams all reach the same socket.
//   - msg is only valid until MsgCB returns: the pipe reuses the buffer
//     for the next read. Copy it (bytes.Clone) to keep it. A slice kept
//     anyway stays readable memory (it is never unmapped or freed under
//     it), but its bytes may have been overwritten by later messages.
//   - from is the sender, and where the message arrived: see [Peer]. Keep
//     it to answer later: p.Send(reply, from), from any goroutine, leaves
//     from the local address the peer wrote to.
//   - p is the pipe to answer on: for a TCP server it is the connection's
//     own pipe (see [Pipe.Parent]), for a UDP server the server pipe, for
//     a client pipe the client pipe itself.
//   - While MsgCB runs, the pipe reads no further message from that socket
//     or connection: a slow callback slows its sender (TCP) or lets the
//     kernel drop datagrams (UDP). Hand long work to another goroutine.
//   - On Linux a UDP pipe reads datagrams in batches (PipeConfig.UDPBatch)
//     and sends the replies its callbacks make with p.Send together when
//     the batch's callbacks have returned: a callback that blocks also
//     holds the replies of the callbacks before it in the batch.
//   - A panic in MsgCB is recovered and logged; it affects only that one
//     message. The socket or connection goes on with the next message.
//   - MsgCB may call any method of any pipe or daemon, including Close. A
//     Close never waits for callbacks. Shutdown does: called from a
//     callback, it cannot finish before that callback returns, so it
//     returns when its context ends (see [Pipe.Shutdown]).
type MsgCallback interface {
	MsgCB(msg []byte, from Peer, p *Pipe)
}

// Peer is the other end of a message: the address it came from (the
// embedded AddrPort, so from.Addr() and from.Port() are the sender's) and
// where it arrived. It is a small value, safe to keep and to use from any
// goroutine: Send answers a Peer from the local address and interface it
// names, so a reply sent long after the callback returned still leaves
// from the address the peer wrote to (a connected or NATed peer drops
// replies from any other).
//
// To send to an address that sent nothing, give Send a Peer with only the
// address: p.Send(msg, p2pd.Peer{AddrPort: to}); the system then chooses
// the source.
type Peer struct {
	netip.AddrPort

	// Local is the local address the message was sent to: on a UDP server
	// bound to the wildcard (0.0.0.0 or ::) on Linux, the destination of
	// the datagram (IP_PKTINFO / IPV6_PKTINFO; a link-local one with its
	// zone) and the pipe's port; elsewhere the pipe's local address. It is
	// the zero AddrPort for a datagram sent to a multicast or broadcast
	// address, which is no source for a reply. Send on a wildcard UDP pipe
	// sends from Local when it is set.
	Local netip.AddrPort

	// IfIndex is the index of the interface the datagram arrived on
	// (wildcard UDP on Linux; 0 elsewhere). Send on a wildcard UDP pipe
	// sends through it when it is set.
	IfIndex int

	// Truncated reports a UDP datagram longer than PipeConfig.BufferSize,
	// of which msg holds only the first BufferSize bytes. Send ignores it.
	Truncated bool

	// sock is the index of the UDP server's socket the datagram came in
	// on (PipeConfig.Sockets), which Send answers from; 0 for the first.
	sock uint16
}

// MsgCallbackFunc adapts an ordinary function to a [MsgCallback].
type MsgCallbackFunc func(msg []byte, from Peer, p *Pipe)

// MsgCB calls f(msg, from, p).
func (f MsgCallbackFunc) MsgCB(msg []byte, from Peer, p *Pipe) { f(msg, from, p) }

var _ MsgCallback = MsgCallbackFunc(nil)
