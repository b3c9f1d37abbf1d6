// Command sorakaq-load measures a running sorakaQ server: submit throughput
// and latency (-mode submit), submit latency at low concurrency (-mode
// latency) and firing precision through its own callback sink (-mode fire).
// Standard library only. Every figure is exact from the recorded samples.
//
//	go run ./cmd/sorakaq-load -mode submit -c 100 -d 20s
//	go run ./cmd/sorakaq-load -mode fire -n 100000 -rate 5000 -lead 30s
//	go run ./cmd/sorakaq-load -mode latency -c 10 -n 20000
package main

import (
	"fmt"
	"os"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr *os.File) int {
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
	return 0
}
