"""Registry.build: a call that does not fit the builder's signature is the user's config error; a
TypeError raised inside the builder is a bug and propagates as itself."""
from __future__ import annotations

import pytest

from deepfoundry.errors import DeepfoundryError
from deepfoundry.registry import Registry


def _registry() -> Registry:
    reg = Registry("widget")

    @reg.register("adder")
    def adder(*, size: int, scale: float = 1.0) -> float:
        """Adds."""
        return size * scale

    @reg.register("buggy")
    def buggy(*, size: int = 2) -> float:
        """Has a bug."""
        return size + "1"  # TypeError inside the builder

    return reg


def test_a_typeerror_inside_the_builder_propagates_as_typeerror() -> None:
    with pytest.raises(TypeError, match="unsupported operand"):
        _registry().build("buggy", {"size": 3})


def test_a_missing_required_argument_names_the_config_key() -> None:
    with pytest.raises(DeepfoundryError, match=r"widget 'adder' needs config key 'model.size'; received: scale"):
        _registry().build("adder", {"scale": 2.0}, key="model")


def test_unknown_keys_context_and_none_values_as_before() -> None:
    reg = _registry()
    with pytest.raises(DeepfoundryError, match="unknown config key 'model.colour'"):
        reg.build("adder", {"size": 1, "colour": "red"}, key="model")
    # context reaches only builders that accept it; None keeps the default
    assert reg.build("adder", {"scale": None}, context={"size": 4, "other": 1}) == 4.0
