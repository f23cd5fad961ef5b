"""Smart Ratio's Table 16 variants that the paper does not specify are refused by name."""

from __future__ import annotations

import pytest

import gemminer.methods.smart_ratio  # noqa: F401  (registers "smart-ratio")
from gemminer.errors import ConfigError
from gemminer.methods import METHODS


@pytest.mark.parametrize("variant", ["v4", "v5", "v6"])
def test_unspecified_variants_say_why(variant):
    with pytest.raises(ConfigError, match=f"'{variant}' of Table 16 is not implemented"):
        METHODS.get("smart-ratio").build_settings({"variant": variant})
