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

// MsgCallbackFunc adapts an ordinary function to a [MsgCallback].
type MsgCallbackFunc func(msg []byte, from netip.AddrPort, p *Pipe)

// MsgCB calls f(msg, from, p).
func (f MsgCallbackFunc) MsgCB(msg []byte, from netip.AddrPort, p *Pipe) { f(msg, from, p) }

var _ MsgCallback = MsgCallbackFunc(nil)
