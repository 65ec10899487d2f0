// Package systemd runs a p2pd Daemon as a system service: it serves the
// sockets the service manager passes (socket activation, sd_listen_fds(3))
// and tells the manager when the daemon is ready or stopping, and pings its
// watchdog (sd_notify(3)). It speaks the protocol, so it needs no libsystemd
// and works under anything that speaks it too (systemd-socket-activate, s6).
//
//	d := &p2pd.Daemon{PipeConfig: p2pd.PipeConfig{OnMsg: cb}}
//	_, err := systemd.Listen(ctx, d)
//	if errors.Is(err, systemd.ErrNoActivation) {
//		_, err = d.ListenAll(ctx, targets, ports, protos, p2pd.AnyFamily)
//	}
//	if err != nil {
//		return err
//	}
//	systemd.Notify(systemd.NotifyReady)
//
// Serving the sockets is [p2pd.Daemon.Adopt]; this package reads the
// environment that says which they are. See docs/systemd.md for unit files.
package systemd
