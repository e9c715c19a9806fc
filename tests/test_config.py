"""Configurable records init arguments; build() turns them back into an equal module."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from tokenforge.config import Configurable, build


class Leaf(Configurable, nn.Module):
    def __init__(self, width: int, scale: float = 2.0, names: tuple[str, ...] = ("a", "b")) -> None:
        super().__init__()
        self.linear = nn.Linear(width, width)


class Parent(Leaf):
    def __init__(self, child: Leaf, depth: int = 3, **extra: int) -> None:
        super().__init__(width=child.linear.in_features)
        self.child = child


def test_records_outermost_arguments_with_defaults() -> None:
    leaf = Leaf(4)
    assert leaf.init_args == {"width": 4, "scale": 2.0, "names": ["a", "b"]}
    parent = Parent(Leaf(5, scale=1.5), depth=2, gamma=7)
    assert parent.init_args == {
        "child": {"class_path": "test_config.Leaf", "init_args": {"width": 5, "scale": 1.5, "names": ["a", "b"]}},
        "depth": 2,
        "gamma": 7,
    }


def test_build_round_trip_through_json() -> None:
    parent = Parent(Leaf(3), depth=1)
    spec = json.loads(json.dumps(parent.spec()))
    rebuilt = build(spec)
    assert type(rebuilt) is Parent and type(rebuilt.child) is Leaf
    assert rebuilt.init_args == parent.init_args
    assert rebuilt.child.linear.in_features == 3


def test_unserialisable_argument_names_the_culprit() -> None:
    class Holder(Configurable, nn.Module):
        def __init__(self, tensor: torch.Tensor) -> None:
            super().__init__()

    with pytest.raises(TypeError, match=r"Holder\.tensor"):
        Holder(torch.zeros(1)).init_args
