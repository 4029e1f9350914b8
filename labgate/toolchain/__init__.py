"""How each real component binary is obtained.

Order, for every component: an explicit environment variable (``ZOT_BIN``, ...) -> ``PATH`` -> the
cache outside the repository, keyed by component and version -> an install through the package
registries (``go install``, a generated wrapper module, ``apt-get``, ``npm``). ``labgate tools status``
shows, per component, the pinned version and where the binary came from, or exactly why it is not
available (the registry's own refusal).
"""

from __future__ import annotations

from labgate.toolchain.specs import TOOLS, Tool, tool
from labgate.toolchain.resolve import Resolved, resolve, resolve_all, install, cache_root, spec

__all__ = ["TOOLS", "Tool", "tool", "Resolved", "resolve", "resolve_all", "install", "cache_root", "spec"]
