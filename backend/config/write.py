"""Writing a configuration as TOML, as `reelfs init` does for reelfs.toml.

tomli-w quotes and escapes as the TOML specification says: a family named ``a.b`` stays
one table (``[families."a.b"]``), a newline in a string stays in the string.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import tomli_w


def dump(raw: Mapping[str, Any]) -> str:
    """The tables of `raw` as TOML text (TypeError for a value TOML cannot hold)."""
    return tomli_w.dumps(raw)
