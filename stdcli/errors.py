"""Errors as users read them: one line each."""

from __future__ import annotations

import signal


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised wherever the program is, so that it ends as Ctrl-C does: every finished record kept."""


class StopSignals:
    """The command line's handling of Ctrl-C and SIGTERM: raise KeyboardInterrupt (Terminated) wherever the program
    is, and remember the first, since a library may turn it into an error of its own (transformers does, inside
    its lazy imports), which must still end the run as a stop."""

    def __init__(self) -> None:
        self.first: KeyboardInterrupt | None = None

    def install(self) -> None:
        signal.signal(signal.SIGTERM, self._raise)
        if signal.getsignal(signal.SIGINT) is signal.default_int_handler:  # an ignored SIGINT (nohup, &) stays so
            signal.signal(signal.SIGINT, self._raise)

    def finished(self) -> None:
        """The run is over: a late Ctrl-C or SIGTERM must not turn its exit into a crash during shutdown."""
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)

    def raise_if_stopped(self, error: Exception) -> None:
        """The stop itself, if there was one, in place of `error`: a Ctrl-C that went through a library's import
        can leave a module half made, whose next use fails (numpy: "module 'numpy' has no attribute ...") in what
        would otherwise be reported as one broken video."""
        if self.first is not None:
            raise self.first from error

    def _raise(self, signum: int, frame: object) -> None:
        stop = Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()
        self.first = self.first or stop
        raise stop


STOPS = StopSignals()


def one_line(error: BaseException, limit: int | None = None) -> str:
    """The error's message on one line (whitespace runs collapsed), its type's name if it has none, cut to `limit`
    characters with an ellipsis."""
    text = " ".join(str(error).split()) or type(error).__name__
    return text if limit is None or len(text) <= limit else text[: limit - 3] + "..."
