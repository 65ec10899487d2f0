module github.com/p2pd/p2pd

go 1.26.0

require (
	github.com/huin/goupnp v1.3.0
	github.com/pion/stun/v3 v3.1.7
	go.uber.org/goleak v1.3.0
	golang.org/x/net v0.49.0
	golang.org/x/sys v0.50.0
)

require (
	github.com/pion/dtls/v3 v3.1.5 // indirect
	github.com/pion/logging v0.2.4 // indirect
	github.com/pion/transport/v4 v4.1.0 // indirect
	github.com/wlynxg/anet v0.0.5 // indirect
	golang.org/x/crypto v0.48.0 // indirect
	golang.org/x/sync v0.0.0-20210220032951-036812b2e83c // indirect
)
