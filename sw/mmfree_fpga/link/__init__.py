"""The host link: the framed protocol (``protocol``, its specification in the docstring),
the host side of it (``framed.FramedTransport``, a ``Transport`` that ``CoreDriver`` runs on
unchanged) and test peers (``faults``: a fault-injecting transport, the device model).
The gateware side is ``mmfree_hw.link``, which imports ``protocol`` only: this package
imports nothing at import time, so the gateware pulls in no driver code."""


def __getattr__(name):
    if name in ("FramedTransport", "LinkStats"):
        from . import framed
        return getattr(framed, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["FramedTransport", "LinkStats"]
