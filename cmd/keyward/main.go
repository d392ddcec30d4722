// Command keyward is Keyward's server and command-line client.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/keyward/keyward/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := cli.Run(ctx, os.Args, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
