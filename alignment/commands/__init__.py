"""One module per command, named by its verb: `rlhf <verb>` runs `alignment/commands/<verb>.py`'s `main(argv)`.

This folder is the list of commands (`alignment.cli` finds them here); the first line of each module's docstring is
what `rlhf --help` says of it. A command parses its command line and calls its stage as a library function.
"""
