// Command sorakaq-load measures a running sorakaQ server: submit throughput
// and latency (-mode submit), submit latency at low concurrency (-mode
// latency) and firing precision through its own callback sink (-mode fire).
// Standard library only. Every figure is exact from the recorded samples.
//
//	go run ./cmd/sorakaq-load -mode submit -c 100 -d 20s
//	go run ./cmd/sorakaq-load -mode fire -n 100000 -rate 5000 -lead 30s
//	go run ./cmd/sorakaq-load -mode fire -pattern overlap -ahead 1s -ref
//	go run ./cmd/sorakaq-load -mode latency -c 10 -n 20000
package main

import (
	"fmt"
	"io"
	"os"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run exits 2 on bad flags, 1 when the run could not be made or a fire
// run's verdict failed (missing, early, duplicate or unknown callbacks, a
// schedule error out of bounds), else 0.
func run(args []string, stdout, stderr io.Writer) int {
	cfg, err := parseFlags(args, stderr)
	if err != nil {
		if err == errHelp {
			return 0
		}
		fmt.Fprintln(stderr, "sorakaq-load:", err)
		return 2
	}
	var rep *Report
	switch cfg.Mode {
	case "submit", "latency":
		rep, err = runSubmit(cfg, stderr)
		if rep != nil {
			rep.Verdict.Pass = true
		}
	case "fire":
		rep, err = runFire(cfg, stderr)
	}
	if err != nil {
		fmt.Fprintln(stderr, "sorakaq-load:", err)
		return 1
	}
	if cfg.JSON {
		// Table on stderr, the JSON object alone on stdout.
		rep.WriteTable(stderr)
		if err := rep.WriteJSON(stdout); err != nil {
			fmt.Fprintln(stderr, "sorakaq-load:", err)
			return 1
		}
	} else {
		rep.WriteTable(stdout)
	}
	if cfg.Mode == "fire" && !rep.Verdict.Pass {
		return 1 // the reasons are in the table's verdict
	}
	return 0
}
