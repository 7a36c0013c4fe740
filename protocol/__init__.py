"""pushjobs.protocol: pure, synchronous protocol code shared by server, agent and CLI.

No I/O lives here: message model, codecs, header, signing, timestamps, Chef request
authentication and key handling. Everything is deterministic and covered by test vectors.
"""

from __future__ import annotations

__version__ = "0.1.0"
