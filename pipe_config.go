package p2pd

import (
	"crypto/tls"
	"log/slog"
	"net"
	"time"
)

// Defaults used by a zero [PipeConfig].
const (
	DefaultConnectTimeout = 10 * time.Second
	DefaultQueueSize      = 128
	DefaultUDPBufferSize  = 64 << 10 // the largest UDP payload
	DefaultTCPBufferSize  = 32 << 10 // as io.Copy's: fewer reads when streaming
	DefaultMaxMsgSize     = 1 << 20
	DefaultUDPBatch       = 32 // datagrams per system call, where batches exist (Linux)
	DefaultMaxConns       = 16384
	DefaultIdleTimeout    = 5 * time.Minute  // connections a server accepts
	DefaultReadTimeout    = 30 * time.Second // one framed message
	DefaultWriteTimeout   = 30 * time.Second // one TCP Send
	DefaultDADWait        = 10 * time.Second // a tentative IPv6 address
	DefaultMaxBuffered    = 64 << 20         // partial frames, over a server pipe's connections
)

// PipeConfig holds the settings of a pipe. Its zero value is a valid
// configuration and a nil *PipeConfig means the zero value. Listen and Dial
// copy it: changing it afterwards does not affect the pipe (use
// [Pipe.SetOnMsg] to change the callback). The pipes a TCP server accepts
// share their server's settings.
type PipeConfig struct {
	// OnMsg receives every message; see [MsgCallback] for the contract.
	// Nil: messages only go to subscriptions ([Pipe.Subscribe]) and linked
	// pipes ([Pipe.AddPipe]).
	OnMsg MsgCallback

	// OnUp is called when a conversation starts: on a TCP server, for each
	// accepted connection (with the connection's pipe, after the TLS
	// handshake if any); on a client pipe, once connected. It runs on the
	// pipe's goroutine before any message of that pipe. Nil: not called.
	OnUp func(p *Pipe)

	// OnEnd is called exactly once for every pipe when it ends, server
	// pipes included (check p.IsServer()), from the pipe's own goroutine
	// after its last message. reason is nil for a local Close or Shutdown;
	// otherwise it says why: io.EOF for a clean close by the peer,
	// ErrIdleTimeout, ErrReadTimeout, ErrFrameTooLarge, ErrBadFrame,
	// ErrOverBudget, a TLS or network error (test with errors.Is / errors.As). Nil: not called.
	OnEnd func(p *Pipe, reason error)

	// ConnectTimeout bounds Dial (resolve, connect, TLS handshake), and the
	// TLS handshake of accepted connections. Zero: DefaultConnectTimeout;
	// negative: no limit beyond Dial's context. The context given to Dial
	// also applies, whichever ends first.
	ConnectTimeout time.Duration

	// IdleTimeout closes a TCP connection that receives nothing for this
	// long, with reason ErrIdleTimeout (against peers that connect and
	// send nothing); one that waits parked, without a goroutine (see
	// [Pipe]), is closed within 100 ms after that. Zero:
	// DefaultIdleTimeout for the connections a server accepts, never for
	// client pipes. Negative: never.
	IdleTimeout time.Duration

	// ReadTimeout bounds the reading of one framed TCP message, from its
	// first byte to its last; a message still incomplete then ends the
	// connection with reason ErrReadTimeout (against slow senders that
	// trickle bytes). It does not apply to FrameRaw, where a message is
	// one read. Zero: DefaultReadTimeout. Negative: no limit.
	ReadTimeout time.Duration

	// WriteTimeout bounds each TCP Send: while the peer's receive window
	// is full, Send blocks (it returns once the system has taken the
	// whole message, however long a peer that keeps reading takes); a
	// peer that takes nothing for WriteTimeout loses the connection (this
	// is noticed between WriteTimeout and twice that after its last
	// progress), with reason ErrWriteTimeout, which that Send returns too,
	// and is counted ([PipeStats].WriteTimeouts). So a peer that asks for
	// replies and never reads them cannot pin a connection, its goroutine
	// and a MaxConns slot, nor hold up Shutdown. Zero: DefaultWriteTimeout.
	// Negative: no limit.
	WriteTimeout time.Duration

	// MaxConns caps the connections a TCP server pipe holds at once. A
	// Daemon also caps the total over its listeners (Daemon.MaxTotalConns).
	// When a new connection comes to a full server, the server closes the
	// connection that has received nothing for the longest (among a
	// sample of 64), if that is at least a second, with reason ErrEvicted,
	// and serves the newcomer ([PipeStats].Evicted): a peer that holds a
	// slot while sending nothing (a FrameRaw connection trickling a byte
	// per IdleTimeout, a silent TLS handshake) loses it to one that comes,
	// and peers that talk keep theirs. With no such connection the
	// newcomer is closed at once, with a reset ([PipeStats].Rejected).
	// Zero: DefaultMaxConns. Negative: no limit.
	MaxConns int

	// QueueSize is the capacity of each subscription queue, in messages.
	// When a queue is full, new matching messages are dropped for that
	// subscription and counted ([Sub.Dropped]). It is also the capacity of
	// the queue of accepted connections that [Pipe.Accept] takes from.
	// Zero or negative: DefaultQueueSize.
	QueueSize int

	// BufferSize is the read buffer size. UDP: datagrams longer than it are
	// truncated. TCP FrameRaw: the largest message one read returns.
	// Framed TCP: the initial buffer, grown up to MaxMsgSize for large
	// frames. Zero or negative: DefaultUDPBufferSize for UDP,
	// DefaultTCPBufferSize for TCP.
	BufferSize int

	// UDPBatch is how many datagrams a UDP pipe reads with one system call
	// where the system can batch (Linux: recvmmsg). While the callbacks of
	// a batch of several run, Sends on the pipe are queued and leave
	// together (sendmmsg) when the batch's last callback returns: a
	// callback that blocks holds the replies queued before it, up to about
	// 100 ms, when a watchdog sends them. A queued Send returns nil; should
	// the system then refuse the datagram, it is dropped and logged.
	// Queued replies to one peer of equal size may leave as one buffer the
	// kernel cuts back into the datagrams (Linux UDP_SEGMENT): the peer
	// gets each on its own, in order.
	// Receive buffers (UDPBatch × BufferSize bytes of Go heap) come from a
	// pool while datagrams arrive: an idle pipe holds none, and the GC
	// frees those no pipe has taken for a while. Zero or negative:
	// DefaultUDPBatch; 1: one datagram per call, every Send at once. A
	// read takes at most 1024 (Linux's limit).
	UDPBatch int

	// Sockets is how many sockets a server pipe that Listen opens (a
	// Daemon's listeners included) binds to its address, each read by a
	// goroutine of its own, so that UDP reads and TCP accepts use several
	// cores. The pipe stays one (one listener of a Daemon, one set of
	// counters, limits and connections); a datagram's Peer remembers its
	// socket, and Send answers it from there. Zero or 1: one socket,
	// without SO_REUSEPORT. N > 1 (at most 64): N sockets with
	// SO_REUSEPORT, among which the kernel spreads peers by a hash of
	// their address and port, so all of one peer's datagrams reach the
	// same socket (and, UDP, its callbacks run in order). Negative: one per
	// GOMAXPROCS (at most 64), one where N > 1 is not supported. Linux only:
	// elsewhere N > 1 fails with an error wrapping ErrUnsupported. Dial,
	// ServeListener, ServePacketConn and Daemon.Adopt ignore it.
	//
	// A second instance is refused as without it: Listen first binds the
	// address once without SO_REUSEPORT (and closes that socket), which
	// fails with ErrAddrInUse when anything is bound there, a fan-out
	// listener included. The kernel still lets a later socket of the same
	// user that sets SO_REUSEPORT itself join the group and take a share
	// of the peers; one of another user it refuses. A Daemon counts a
	// listener of N sockets as one against MaxListeners; it holds N
	// descriptors, and keeps its N goroutines while idle (it does not
	// park; see [Pipe]).
	Sockets int

	// Framing sets the message boundaries on TCP. Zero: FrameRaw.
	// Ignored on UDP, where a datagram is a message.
	Framing Framing

	// MaxMsgSize is the largest framed TCP message, excluding the frame
	// header or newline. Larger frames end the connection with
	// ErrFrameTooLarge. Zero or negative: DefaultMaxMsgSize.
	MaxMsgSize int

	// MaxBuffered caps the bytes that TCP connections hold for partial
	// frames (carry buffers), over all the connections of a server pipe; a
	// Daemon shares one budget over all its listeners. A carry holds the
	// bytes of a partial frame received so far (its size at most twice
	// that), never what a length prefix claims. A connection whose partial
	// frame would take the total over it is closed with reason
	// ErrOverBudget and counted in [PipeStats].OverBudget. Zero:
	// DefaultMaxBuffered (64 MiB: 64 default-sized frames in flight at
	// once, while connections that send partial frames and stall cost at
	// most that much however many they are), or twice MaxMsgSize if that
	// is more, so that large frames still fit. Negative: no limit.
	MaxBuffered int

	// ReuseAddr sets SO_REUSEADDR on UDP sockets. TCP listeners always get
	// it on Unix, as Go's net package does.
	ReuseAddr bool

	// Linger sets SO_LINGER on TCP connections. Zero: the OS default
	// (close returns at once, data is sent in the background). Positive:
	// close blocks up to this long (rounded up to seconds) to send unsent
	// data. Negative: close discards unsent data and resets the
	// connection (RST).
	Linger time.Duration

	// Broadcast sets SO_BROADCAST on UDP sockets.
	Broadcast bool

	// FreeBind lets a server pipe bind an address that is not (yet) on an
	// interface, such as an IPv6 address whose duplicate address detection
	// is still running (IP_FREEBIND; Linux only, elsewhere Listen fails
	// with ErrUnsupported). False: Listen on a tentative IPv6 address waits
	// for DAD to finish (see DADWait).
	FreeBind bool

	// DADWait bounds how long Listen waits for a tentative IPv6 address to
	// finish duplicate address detection before binding it (the context
	// given to Listen also applies). An address whose DAD failed is not
	// waited for: Listen fails with an error wrapping ErrDADFailed. Zero:
	// DefaultDADWait. Negative: do not wait.
	DADWait time.Duration

	// TLS, if set, runs TLS over TCP pipes: a server needs Certificates
	// (or GetCertificate); a client verifies the server with RootCAs (nil:
	// the system pool) and, if ServerName is empty, the host given to
	// Dial. Ignored on UDP.
	TLS *tls.Config

	// ListenConfig, if set, is used to make server sockets: its KeepAlive
	// settings apply, and its Control function runs after p2pd has set its
	// own socket options (SO_REUSEADDR, SO_BROADCAST).
	ListenConfig *net.ListenConfig

	// Dialer, if set, is used to make client sockets. Its LocalAddr is
	// replaced by the route's address; its Control (or ControlContext) runs
	// after p2pd's own socket options.
	Dialer *net.Dialer

	// Logger receives recovered panics and errors that have no caller to
	// return to. Nil: slog.Default().
	Logger *slog.Logger

	ended  func(*Pipe) // the owner's hook for a server pipe that ended, after OnEnd
	group  *group      // the owner's count of running server pipes, or nil
	dog    *watcher    // the owner's watchdog of blocked UDP batches
	warns  *warnGate   // the owner's rate limit of repeated warnings
	park   *parker     // the owner's parker of idle TCP connections
	limit  *connLimit  // the owner's cap on connections over all its pipes, or nil
	budget *budget     // MaxBuffered, shared by a server pipe's connections (a Daemon's listeners); nil: no limit
}

func (c *PipeConfig) connectTimeout() time.Duration {
	if c.ConnectTimeout == 0 {
		return DefaultConnectTimeout
	}
	return c.ConnectTimeout
}

func (c *PipeConfig) queueSize() int {
	if c.QueueSize <= 0 {
		return DefaultQueueSize
	}
	return c.QueueSize
}

func (c *PipeConfig) bufferSize(proto Proto) int {
	if c.BufferSize > 0 {
		return c.BufferSize
	}
	if proto == UDP {
		return DefaultUDPBufferSize
	}
	return DefaultTCPBufferSize
}

// idleTimeout is the idle limit of a connection (accepted: from a server).
func (c *PipeConfig) idleTimeout(accepted bool) time.Duration {
	switch {
	case c.IdleTimeout < 0:
		return 0
	case c.IdleTimeout == 0 && accepted:
		return DefaultIdleTimeout
	}
	return c.IdleTimeout
}

func (c *PipeConfig) readTimeout() time.Duration  { return limit(c.ReadTimeout, DefaultReadTimeout) }
func (c *PipeConfig) writeTimeout() time.Duration { return limit(c.WriteTimeout, DefaultWriteTimeout) }

// limit reads a timeout setting: zero is def, negative is none (0).
func limit(d, def time.Duration) time.Duration {
	switch {
	case d < 0:
		return 0
	case d == 0:
		return def
	}
	return d
}

func (c *PipeConfig) maxConns() int {
	if c.MaxConns == 0 {
		return DefaultMaxConns
	}
	return c.MaxConns
}

func (c *PipeConfig) udpBatch() int {
	if c.UDPBatch <= 0 {
		return DefaultUDPBatch
	}
	return c.UDPBatch
}

func (c *PipeConfig) maxMsgSize() int {
	if c.MaxMsgSize <= 0 {
		return DefaultMaxMsgSize
	}
	return c.MaxMsgSize
}

func (c *PipeConfig) maxBuffered() int {
	if c.MaxBuffered == 0 {
		return max(DefaultMaxBuffered, 2*c.maxMsgSize())
	}
	return c.MaxBuffered
}

// newBudget returns a budget of MaxBuffered, or nil for no limit.
func (c *PipeConfig) newBudget() *budget {
	if n := c.maxBuffered(); n >= 0 {
		return &budget{max: int64(n)}
	}
	return nil
}

func (c *PipeConfig) logger() *slog.Logger {
	if c.Logger != nil {
		return c.Logger
	}
	return slog.Default()
}

// lingerSecs returns the SO_LINGER value for net.TCPConn.SetLinger and
// whether to set it at all.
func (c *PipeConfig) lingerSecs() (int, bool) {
	switch {
	case c.Linger == 0:
		return 0, false
	case c.Linger < 0:
		return 0, true
	}
	return int((c.Linger + time.Second - 1) / time.Second), true
}
