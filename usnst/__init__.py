"""usnst: real-time neural style transfer for ultrasound simulators.

In-process use: ``from usnst import Stylizer`` (usnst.api). The command line: usnst.cli assembles the subcommands of
usnst.commands (stream, offline, train, engine); usnst.flags holds the flags several commands share."""


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("usnst")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "0+unknown"


__version__ = _version()


def __getattr__(name: str):
    # Imported on first use, so `usnst simulate` and the other stream commands start without loading torch.
    if name == "Stylizer":
        from usnst.api import Stylizer

        return Stylizer
    raise AttributeError(f"module 'usnst' has no attribute {name!r}")
