"""disdiff.config.plain: OmegaConf nodes become plain containers, the way checkpoints store them."""

from __future__ import annotations

import pickle

from omegaconf import OmegaConf

from disdiff.config import plain


def test_plain_turns_every_omegaconf_node_into_builtin_containers():
    cfg = OmegaConf.create({"a": {"b": [1, 2, {"c": "${a.d}"}], "d": 3}, "e": (4, 5)})
    nested = {"top": cfg.a, "list": [cfg.a.b, (6, 7)], 8: "int key"}

    out = plain(nested)

    assert out == {"top": {"b": [1, 2, {"c": 3}], "d": 3}, "list": [[1, 2, {"c": 3}], [6, 7]], "8": "int key"}
    # no OmegaConf object survives anywhere (they are what makes hparams unloadable elsewhere)
    def walk(value):
        assert type(value) in (dict, list, int, str), type(value)
        for child in (value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()):
            walk(child)
    walk(out)
    assert pickle.loads(pickle.dumps(out)) == out


def test_plain_leaves_other_values_alone():
    marker = object()
    assert plain(marker) is marker
    assert plain(None) is None and plain(2.5) == 2.5 and plain("x") == "x"
