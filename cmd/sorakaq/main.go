// Command sorakaq runs sorakaQ: `sorakaq all` (the all-in-one), or one role
// of the distributed mode. See README.md.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"

	"go.uber.org/zap"

	"github.com/sorakaq/sorakaq/internal/app"
	"github.com/sorakaq/sorakaq/internal/cli"
	"github.com/sorakaq/sorakaq/internal/config"
	"github.com/sorakaq/sorakaq/internal/version"
	"github.com/sorakaq/sorakaq/web"
)

const usage = `usage: sorakaq [--config FILE] <command>

commands:
  all       every service in one process: the all-in-one over the embedded
            store, or (mode: distributed) the four roles in one process
  receive   the HTTP API service (distributed mode)
  center    the dispatcher (distributed mode)
  worker    the timing-wheel worker (distributed mode)
  admin     the admin API and console (distributed mode)
  version   print the version
  help      this text and the operator commands (msg, topic, instance)

--config FILE (or SORAKAQ_CONFIG=FILE) picks the configuration; without one
the built-in defaults run the all-in-one with its data under ./data.
Every key can be overridden by SORAKAQ_<KEY> (e.g. SORAKAQ_RECEIVE_LISTEN).
`

func main() {
	// sorakaQ's live heap is small (the wheel holds only the near window),
	// so Go's default GOGC=100 collects every few MB and the collector's
	// assists show up as callback lateness; 400 trades a little memory for
	// far fewer cycles. GOGC in the environment still wins.
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(400)
	}
	app.ConsoleFiles = web.Assets
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("sorakaq", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, usage) }
	cfgPath := fs.String("config", os.Getenv("SORAKAQ_CONFIG"), "configuration file")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	rest := fs.Args()
	if len(rest) == 0 {
		fs.Usage()
		return 2
	}
	cmd := rest[0]
	if cmd == "help" {
		fmt.Fprint(stdout, usage+"\n"+cli.Usage)
		return 0
	}
	if cli.Commands[cmd] {
		// the operator commands talk to a running server; they read no
		// configuration file
		return cli.Run(rest, stdout, stderr, os.Getenv)
	}
	// flags may also follow the command: sorakaq all --config x.yaml
	if err := fs.Parse(rest[1:]); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "sorakaq: unexpected arguments %v\n", fs.Args())
		return 2
	}
	switch cmd {
	case "version":
		fmt.Fprintln(stdout, version.String())
		return 0
	case "all", "receive", "center", "worker", "admin":
	default:
		fmt.Fprintf(stderr, "sorakaq: unknown command %q\n\n%s", cmd, usage)
		return 2
	}
	cfg, err := config.Load(*cfgPath)
	if err != nil {
		fmt.Fprintln(stderr, "sorakaq:", err)
		return 2
	}
	log, err := app.NewLogger(cfg.Log)
	if err != nil {
		fmt.Fprintln(stderr, "sorakaq:", err)
		return 2
	}
	defer log.Sync()
	a, err := app.New(cmd, cfg, log)
	if err != nil {
		log.Error("start failed", zap.Error(err))
		return 1
	}
	if err := a.Start(context.Background()); err != nil {
		log.Error("start failed", zap.Error(err))
		_ = a.Stop(context.Background())
		return 1
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	code := 0
	select {
	case s := <-sig:
		log.Info("signal received, shutting down", zap.String("signal", s.String()))
	case err := <-a.Failed():
		if err != nil && !errors.Is(err, os.ErrClosed) {
			log.Error("server stopped", zap.Error(err))
			code = 1
		}
	}
	// each process bounds its own shutdown by shutdown.timeout
	if err := a.Stop(context.Background()); err != nil {
		log.Error("shutdown", zap.Error(err))
		code = 1
	}
	return code
}
