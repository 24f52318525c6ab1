"""One exception type for bad input: the CLI prints its message as a single line and exits 2."""


class PdlabError(ValueError):
    """A problem with what the user gave (a preset name, a number, a trace file)."""
