package p2pd_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"math/big"
	"net"
	"net/netip"
	"time"

	"github.com/p2pd/p2pd"
)

// TLS on a TCP pipe: the server's PipeConfig.TLS holds its certificate,
// the client's the roots it trusts; messages are framed inside the TLS
// stream as on a plain one.
func ExamplePipeConfig_tls() {
	cert, roots, err := localCert() // a real server loads its certificate
	if err != nil {
		fmt.Println(err)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	lo, _ := p2pd.Route{Family: p2pd.IPv4}.Bind("localhost", 0)
	srv, err := p2pd.Listen(ctx, p2pd.TCP, lo, &p2pd.PipeConfig{
		Framing: p2pd.FrameLine,
		TLS:     &tls.Config{Certificates: []tls.Certificate{cert}},
		OnMsg: p2pd.MsgCallbackFunc(func(msg []byte, from p2pd.Peer, p *p2pd.Pipe) {
			p.Send(append([]byte("secret received: "), msg...), from)
		}),
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer srv.Close()

	cli, err := p2pd.Dial(ctx, p2pd.TCP, p2pd.Route{}, "127.0.0.1", srv.LocalAddr().Port(), &p2pd.PipeConfig{
		Framing: p2pd.FrameLine,
		TLS:     &tls.Config{RootCAs: roots}, // ServerName: the host Dial was given
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer cli.Close()
	sub, _ := cli.Subscribe("", netip.AddrPort{})
	cli.Send([]byte("hello"), p2pd.Peer{})
	m, err := cli.Recv(ctx, sub)
	fmt.Printf("%s %v\n", m.Data, err)
	// Output:
	// secret received: hello <nil>
}

// localCert makes a self-signed certificate for 127.0.0.1, and a pool that
// trusts it.
func localCert() (tls.Certificate, *x509.CertPool, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "p2pd example"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	parsed, err := x509.ParseCertificate(der)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	roots := x509.NewCertPool()
	roots.AddCert(parsed)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, roots, nil
}
