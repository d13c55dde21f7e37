package main

// cli_help.go is "authbox help [COMMAND…]", the same page as
// "authbox COMMAND… --help", for those used to git's and go's way.

import (
	"github.com/urfave/cli/v2"
)

func helpCommand() *cli.Command {
	return &cli.Command{
		Name:      "help",
		ArgsUsage: "[COMMAND [SUBCOMMAND]]",
		Usage:     "show the help of a command, as COMMAND --help does",
		// Its own flags would stop at "--help": everything after "help" is
		// the command to describe.
		SkipFlagParsing: true,
		Action: func(ctx *cli.Context) error {
			// A new app, since urfave/cli sets an app up once per run; the
			// same streams, so the page goes where this one's output goes.
			args := append(append([]string{ctx.App.Name}, ctx.Args().Slice()...), "--help")
			return newApp(ctx.App.Reader, ctx.App.Writer, ctx.App.ErrWriter).RunContext(ctx.Context, args)
		},
	}
}
