// Command report turns benchmark results into Markdown tables. It reads
// JSON lines from stdin (from load and scale: {"bench", "impl", "round",
// "metrics"}), takes the median over rounds of every metric per
// implementation and of p2pd's ratio to each baseline within a round, and
// prints one table comparing p2pd with each baseline, with the targets
// marked. With -gobench it also reads `go test -bench
// -benchmem` output and prints a second table.
package main

import (
	"flag"
	"fmt"
	"os"
)

func main() {
	gobench := flag.String("gobench", "", "file with `go test -bench -benchmem` output (optional)")
	flag.Parse()
	if err := run(*gobench); err != nil {
		fmt.Fprintln(os.Stderr, "report:", err)
		os.Exit(1)
	}
}

func run(gobench string) error {
	lines, bad := readResults(os.Stdin)
	for _, b := range bad {
		fmt.Fprintln(os.Stderr, "report: skipped:", b)
	}
	fmt.Println("## Targets and comparisons")
	fmt.Println()
	fmt.Print(renderRows(withMissingTargets(mainRows(compare(lines)))))
	fmt.Println()
	fmt.Println("Values: medians over runs. p2pd/baseline: the median over the runs paired within a round (the k-th run of p2pd with the k-th of the baseline in the same round, seconds apart; bench/run rotates the order at every repeat), which cancels what the machine's speed does between rounds; range: the lowest and highest of those paired ratios (— when only one pair, or none: then the ratio of the medians). ↑ higher is better, ↓ lower is better, · neither; the ratio is always p2pd/baseline, so for ↓ metrics a ratio below 1 means p2pd is better. n: runs of p2pd/baseline (ECHO_REPEAT per round for the echo benches, SCALE_REPEAT for the scale bench, one for the others). Target: ✓ met, ✗ missed, ? not measurable (a target whose bench did not run is listed last with no values). Growth benches show only their target rows here; all their numbers are in the growth tables.")
	fmt.Println()
	fmt.Println("## Growth: cost against size, p2pd against plain sockets")
	fmt.Println()
	fmt.Print(renderGrowth(lines))
	fmt.Println("scale-PROTO: N listeners opened with one ListenAll against N plain net listeners with a goroutine each (open/close wall time, memory per listener). conns-MODE: N TCP connections held by a client process, the server's heap+stack and RSS per connection; idle: no traffic, msg: one 64-byte message per connection per second. Medians over runs; ratios paired as above.")
	if gobench == "" {
		return nil
	}
	f, err := os.Open(gobench)
	if err != nil {
		return err
	}
	defer f.Close()
	benches, err := readGoBench(f)
	if err != nil {
		return err
	}
	fmt.Println()
	fmt.Println("## Micro-benchmarks (go test -bench)")
	fmt.Println()
	fmt.Print(renderGoBench(benches))
	fmt.Println()
	fmt.Println("Medians over -count runs.")
	return nil
}
