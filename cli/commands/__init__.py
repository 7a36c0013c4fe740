"""The `pushjobs` subcommands, one module per command group."""
