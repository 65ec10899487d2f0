module github.com/p2pd/p2pd/examples/protocols

go 1.26.0

require (
	github.com/miekg/dns v1.1.73
	github.com/p2pd/p2pd v0.0.0
	github.com/pion/stun/v3 v3.1.7
	go.uber.org/goleak v1.3.0
)

require (
	github.com/pion/dtls/v3 v3.1.5 // indirect
	github.com/pion/logging v0.2.4 // indirect
	github.com/pion/transport/v4 v4.1.0 // indirect
	github.com/wlynxg/anet v0.0.5 // indirect
	golang.org/x/crypto v0.54.0 // indirect
	golang.org/x/net v0.57.0 // indirect
	golang.org/x/sys v0.50.0 // indirect
)

replace github.com/p2pd/p2pd => ../..
