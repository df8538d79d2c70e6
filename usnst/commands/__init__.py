"""Subcommands by concern; each module maps command names to (help line, flags function) in ``COMMANDS``, and each
flags function sits beside the run function it sets."""
