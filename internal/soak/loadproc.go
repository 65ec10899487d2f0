//go:build linux

package soak

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os/exec"
	"strings"
	"time"
)

// The load connections' clients run either in this process (load) or in
// a helper process (loadProc, the same program run with -load-client, see
// ClientMain), so that each process needs one descriptor per connection
// rather than two: a hard RLIMIT_NOFILE of 20,000 then holds 10,000
// connections, and the memory measured is the server's alone.
type loadClients interface {
	// connect connects every client and reports, when all have
	// connected and exchanged a first message (or failed).
	connect(ctx context.Context) (clientReport, error)
	// stop stops the clients and returns their final figures.
	stop() (clientReport, error)
}

// clientReport is what the load clients tell: on one JSON line each from
// a helper process.
type clientReport struct {
	Connected  int64  `json:"connected"`
	DialErrors int64  `json:"dial_errors"`
	ConnErrors int64  `json:"conn_errors"`
	Sent       uint64 `json:"sent"`
	Acked      uint64 `json:"acked"`
	Verified   uint64 `json:"verified"`
	Corrupt    uint64 `json:"corrupt"`
	Err        string `json:"err,omitempty"`
}

func (l *load) report() clientReport {
	return clientReport{Connected: l.connected.Load(), DialErrors: l.dialErrs.Load(), ConnErrors: l.connErrs.Load(),
		Sent: l.t.sent.Load(), Acked: l.t.acked.Load(), Verified: l.t.verified.Load(), Corrupt: l.t.corrupt.Load(), Err: l.err.get()}
}

func (l *load) connect(ctx context.Context) (clientReport, error) {
	l.start(ctx)
	return l.report(), nil
}

func (l *load) stop() (clientReport, error) {
	l.close()
	return l.report(), nil
}

// ClientMain is the helper process of the load clients: it connects n
// clients over addrs, writes a clientReport line to out, runs them until
// in ends (or says anything), then stops them and writes the final
// clientReport line.
func ClientMain(addrs []netip.AddrPort, n int, interval time.Duration, in io.Reader, out io.Writer) error {
	if len(addrs) == 0 {
		return errors.New("soak: load client: no addresses")
	}
	if err := raiseNoFile(uint64(n + 256)); err != nil {
		return err
	}
	l := &load{addrs: addrs, n: n, interval: interval}
	enc := json.NewEncoder(out)
	r, _ := l.connect(context.Background())
	if err := enc.Encode(r); err != nil {
		l.stop()
		return err
	}
	bufio.NewReader(in).ReadByte() // until stopped
	r, _ = l.stop()
	return enc.Encode(r)
}

// loadProc runs the load clients in a helper process.
type loadProc struct {
	cmd     *exec.Cmd
	in      io.WriteCloser
	out     *bufio.Reader
	running bool // started and not waited for
}

const (
	procConnectWait = 2 * time.Minute
	procStopWait    = 30 * time.Second
)

// newLoadProc prepares the helper; mk makes its command from the
// arguments ClientArgs parses.
func newLoadProc(mk func(args ...string) *exec.Cmd, addrs []netip.AddrPort, n int, interval time.Duration) *loadProc {
	as := make([]string, len(addrs))
	for i, a := range addrs {
		as[i] = a.String()
	}
	return &loadProc{cmd: mk("-addrs", strings.Join(as, ","), "-conns", fmt.Sprint(n), "-interval", interval.String())}
}

// ParseAddrs parses the -addrs argument of the helper.
func ParseAddrs(s string) ([]netip.AddrPort, error) {
	var out []netip.AddrPort
	for _, f := range strings.Split(s, ",") {
		a, err := netip.ParseAddrPort(f)
		if err != nil {
			return nil, err
		}
		out = append(out, a)
	}
	return out, nil
}

func (p *loadProc) connect(ctx context.Context) (clientReport, error) {
	var err error
	if p.in, err = p.cmd.StdinPipe(); err != nil {
		return clientReport{}, err
	}
	stdout, err := p.cmd.StdoutPipe()
	if err != nil {
		return clientReport{}, err
	}
	p.out = bufio.NewReader(stdout)
	if err := p.cmd.Start(); err != nil {
		return clientReport{}, fmt.Errorf("soak: starting the load clients: %w", err)
	}
	p.running = true
	return p.read(procConnectWait)
}

// read reads one report, or kills the helper after d.
func (p *loadProc) read(d time.Duration) (clientReport, error) {
	type res struct {
		r   clientReport
		err error
	}
	ch := make(chan res, 1)
	go func() {
		var r res
		line, err := p.out.ReadBytes('\n')
		if err == nil {
			err = json.Unmarshal(line, &r.r)
		}
		r.err = err
		ch <- r
	}()
	select {
	case r := <-ch:
		if r.err != nil {
			p.kill()
			return clientReport{}, fmt.Errorf("soak: load clients: %v", r.err)
		}
		return r.r, nil
	case <-time.After(d):
		p.kill() // which ends the read
		<-ch
		return clientReport{}, fmt.Errorf("soak: load clients: no report within %v", d)
	}
}

func (p *loadProc) stop() (clientReport, error) {
	if !p.running {
		return clientReport{}, errors.New("soak: load clients: not running")
	}
	p.in.Close()
	r, err := p.read(procStopWait)
	if p.running {
		p.running = false
		if werr := p.cmd.Wait(); err == nil && werr != nil {
			err = fmt.Errorf("soak: load clients: %v", werr)
		}
	}
	return r, err
}

// kill ends the helper at once and reaps it.
func (p *loadProc) kill() {
	if p.running {
		p.running = false
		p.cmd.Process.Kill()
		p.cmd.Wait()
	}
}
