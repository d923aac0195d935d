return BitDeltaNative.Cli.Run(args);
