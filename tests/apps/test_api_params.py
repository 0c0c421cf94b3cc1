"""/explain's JSON parameters are strictly typed and checked before any work (no server needed)."""

import json

import pytest

from apps.xray.api import _parse


def test_good_parameters_pass_through():
    params, options = _parse(json.dumps({"n_samples": 300, "hide": "mean", "seed": 3, "opacity": 1, "quality": False,
                                         "target": "PNEUMONIA", "colormap": "viridis"}), "lime")
    assert params == {"n_samples": 300, "hide": "mean"}
    assert options["seed"] == 3 and options["quality"] is False and options["target"] == "PNEUMONIA"
    assert options["augment"] == 1  # test-time augmentation off unless asked for
    assert _parse('{"augment": 4}', "grad_cam")[1]["augment"] == 4


@pytest.mark.parametrize(("text", "message"), [
    ('{"seed": NaN}', "seed must be a non-negative integer"),
    ('{"seed": 1e400}', "seed must be a non-negative integer"),
    ('{"seed": -1}', "seed must be between"),
    ('{"seed": true}', "seed must be a non-negative integer"),
    ('{"layer": 4}', "layer must be a layer name"),
    ('{"target": true}', "target must be a class name or index"),
    ('{"quality": "false"}', "quality must be true or false"),
    ('{"opacity": 2}', "opacity must be between 0 and 1"),
    ('{"colormap": "rainbow-unicorn"}', "colour map .rainbow-unicorn. is not offered"),
    ('{"n_samples": true}', "n_samples must be an integer"),
    ('{"n_samples": 300.0}', "n_samples must be an integer"),
    ('{"n_samples": "300"}', "n_samples must be an integer"),
    ('{"compactness": {"a": [1]}}', "compactness must be a number"),
    ('{"hide": 3}', "hide must be a string"),
    ('{"augment": 0}', "augment takes 1 .off. to 32 copies"),
    ('{"augment": 33}', "augment takes 1 .off. to 32 copies"),
    ('{"augment": true}', "augment must be a whole number of copies"),
    ('{"augment": 2.0}', "augment must be a whole number of copies"),
    ('[1, 2]', "params must be a JSON object"),
    ("[" * 100_000, "params is too long"),
    ('[' * 5000 + ']' * 5000, "params must be a JSON object"),
])
def test_bad_parameters_get_a_specific_message(text, message):
    with pytest.raises(ValueError, match=message):
        _parse(text, "lime")


def test_unknown_keys_and_methods_are_not_echoed_whole():
    with pytest.raises(ValueError) as err:
        _parse(json.dumps({"x" * 1_000_000: 1}), "lime")
    assert len(str(err.value)) < 400
    with pytest.raises(ValueError, match="Unknown method"):
        _parse("{}", "no-such-method")
