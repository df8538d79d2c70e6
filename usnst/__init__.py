"""The `usnst` command line: cli assembles the subcommands of usnst.commands (stream, offline, train, engine); flags
holds the flags several commands share. Defaults and choices are read from the packages' configs and registries."""
