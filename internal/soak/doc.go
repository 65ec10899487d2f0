// Package soak holds p2pd's load and soak tests: a program
// (cmd/soak) that holds thousands of TCP connections on one Daemon while
// clients come and go, addresses disappear and come back, a UDP listener
// is flooded, slow clients linger and callbacks misbehave, and then checks
// that every message came back intact and that everything was released.
//
// The logic lives here (Run); cmd/soak is the program and the tests run
// it as a subprocess without the race detector, which cannot follow the
// tens of thousands of goroutines ten thousand connections need.
//
// The program needs Linux. As root it runs in a network namespace of its
// own (a re-exec of itself with CLONE_NEWNET, removed by the kernel when
// the process ends, even when it is killed); without root it runs on
// loopback only and skips the address phase. The clients of the held
// load connections run in a helper process (the program again, with
// -load-client), so that each process needs one descriptor per
// connection, not two, and the memory measured per connection is the
// daemon's alone.
package soak
