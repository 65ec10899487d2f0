package p2pd

import "net/netip"

// MsgCallback receives every message of a pipe, as http.Handler receives
// every request of a server. One callback serves TCP and UDP, clients and
// servers alike.
//
// The contract:
//
//   - MsgCB is called concurrently from several goroutines: one per UDP
//     socket and one per TCP connection. Calls for one UDP socket, or for
//     one TCP connection, are sequential and in arrival order.
//   - msg is only valid until MsgCB returns: the pipe reuses the buffer
//     for the next read. Copy it (bytes.Clone) to keep it.
//   - from is the sender: the UDP datagram's source, or the TCP peer.
//   - p is the pipe to answer on with p.Send(reply, from): for a TCP server
//     it is the connection's own pipe (see [Pipe.Parent]), for a UDP server
//     the server pipe, for a client pipe the client pipe itself.
//   - While MsgCB runs, the pipe reads no further message from that socket
//     or connection: a slow callback slows its sender (TCP) or lets the
//     kernel drop datagrams (UDP). Hand long work to another goroutine.
//   - On Linux a UDP pipe reads datagrams in batches (PipeConfig.UDPBatch)
//     and sends the replies its callbacks make with p.Send together when
//     the batch's callbacks have returned: a callback that blocks also
//     holds the replies of the callbacks before it in the batch.
//   - A panic in MsgCB is recovered and logged; it affects only that one
//     message. The socket or connection goes on with the next message.
//   - MsgCB may call any method of any pipe, including p.Send, p.Close and
//     the parent's Close: a Close made from a callback does not wait for
//     the pipe's goroutines (the caller is one of them).
type MsgCallback interface {
	MsgCB(msg []byte, from netip.AddrPort, p *Pipe)
}

// MsgToCallback is a MsgCallback that also wants to know which local
// address each message was sent to. When a pipe's callback implements it,
// MsgTo is called instead of MsgCB, under the same contract, with to:
//
//   - on a UDP server bound to the wildcard (0.0.0.0 or ::), on Linux, the
//     address the datagram was sent to and the pipe's port, read from
//     IP_PKTINFO / IPV6_PKTINFO (link-local addresses with their zone);
//   - everywhere else, the pipe's local address (a TCP connection's own,
//     a UDP socket's bound address).
//
// Whatever the callback implements, on such a wildcard socket p.Send
// answers a peer from the address that peer last sent to, through the
// interface the datagram came in on, so a client that sent to a secondary
// address gets its reply from that address. Elsewhere (other systems)
// the system chooses the source address of a wildcard socket's replies.
type MsgToCallback interface {
	MsgCallback
	MsgTo(msg []byte, from, to netip.AddrPort, p *Pipe)
}

// MsgCallbackFunc adapts an ordinary function to a [MsgCallback].
type MsgCallbackFunc func(msg []byte, from netip.AddrPort, p *Pipe)

// MsgCB calls f(msg, from, p).
func (f MsgCallbackFunc) MsgCB(msg []byte, from netip.AddrPort, p *Pipe) { f(msg, from, p) }

var _ MsgCallback = MsgCallbackFunc(nil)
