"""One module per ``aevb`` subcommand: ``HELP``, ``add_arguments(parser)``, ``run(args) -> int``."""
