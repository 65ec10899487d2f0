package p2pd

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"net"
	"testing"
	"time"
)

// selfSigned makes a CA-less self-signed certificate for 127.0.0.1 and ::1.
func selfSigned(t *testing.T) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "p2pd test"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
		DNSNames:              []string{"localhost"},
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, pool
}

func TestTLS(t *testing.T) {
	cert, pool := selfSigned(t)
	_, otherPool := selfSigned(t)
	rec := newEndRec()
	srv := listen(t, TCP, loopRoute(t, IPv4), &PipeConfig{
		OnMsg: echoCB, Framing: FrameLine, OnEnd: rec.onEnd,
		TLS: &tls.Config{Certificates: []tls.Certificate{cert}},
	})
	port := srv.LocalAddr().Port()

	t.Run("echo", func(t *testing.T) {
		in := newInbox()
		cli, err := Dial(context.Background(), TCP, Route{}, "127.0.0.1", port, &PipeConfig{OnMsg: in, Framing: FrameLine, TLS: &tls.Config{RootCAs: pool}})
		if err != nil {
			t.Fatal(err)
		}
		defer cli.Close()
		cli.Send([]byte("secret"), Peer{})
		if m := in.next(t); string(m.Data) != "secret" {
			t.Fatalf("got %q", m.Data)
		}
	})
	t.Run("plaintext client", func(t *testing.T) {
		in := newInbox()
		cli, err := Dial(context.Background(), TCP, Route{}, "127.0.0.1", port, &PipeConfig{OnMsg: in})
		if err != nil {
			t.Fatal(err)
		}
		defer cli.Close()
		if err := cli.Send([]byte("GET / HTTP/1.0\r\n\r\n"), Peer{}); err != nil {
			t.Fatal(err)
		}
		_, reason := rec.wait(t, func(p *Pipe) bool { return p.Parent() == srv && p.RemoteAddr() == cli.LocalAddr() })
		var rh tls.RecordHeaderError
		if reason == nil || !errors.As(reason, &rh) {
			t.Fatalf("server reason %v, want a TLS record error", reason)
		}
		waitDone(t, cli)
		for len(in.ch) > 0 {
			if m := <-in.ch; string(m.Data) == "GET / HTTP/1.0\r\n\r\n" {
				t.Fatal("plaintext was echoed")
			}
		}
	})
	t.Run("bad CA", func(t *testing.T) {
		_, err := Dial(context.Background(), TCP, Route{}, "127.0.0.1", port, &PipeConfig{TLS: &tls.Config{RootCAs: otherPool}})
		var ve *tls.CertificateVerificationError
		if !errors.As(err, &ve) {
			t.Fatalf("dial with the wrong CA: %v", err)
		}
	})
}
