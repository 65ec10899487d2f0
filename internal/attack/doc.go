// Package attack holds p2pd's attack suite: hostile peers and careless
// callbacks against real daemons, each attack bounded in count and time,
// on loopback or inside a network namespace the test makes. Each test
// checks its target and reports a figure; run
//
//	go test -v -count=1 -run TestAttack ./internal/attack
//
// (as root, for the namespace) to print the README's table of them, each
// beside the default it exercises.
package attack
