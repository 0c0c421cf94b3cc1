"""The seen-in-training warning and the prediction card's words, on hand-made values."""

import numpy as np

from apps.xray import views
from apps.xray.similar import Neighbour
from core.trust import Assessment


def _neighbour(distance: float) -> Neighbour:
    return Neighbour("PNEUMONIA/person1_bacteria_1.jpeg", "PNEUMONIA", distance, np.zeros((4, 4, 3), np.uint8))


def test_warns_only_when_the_nearest_case_is_the_same_film():
    assert "Seen in training" in views.seen_in_training([_neighbour(0.0), _neighbour(0.02)])
    assert views.seen_in_training([_neighbour(0.0019)]) == ""  # the closest other film measured
    assert views.seen_in_training([]) == ""


def test_card_shows_threshold_side_set_and_gate():
    inside = Assessment({"NORMAL": 0.3, "PNEUMONIA": 0.7}, "PNEUMONIA", "PNEUMONIA", 0.7, 0.25, ("PNEUMONIA",), True,
                        0.4, None, True, 0.9)
    card = views.prediction_card(inside)
    assert "at or above" in card and "25%" in card and "70%" in card and "Unlike" not in card
    outside = Assessment({"NORMAL": 0.1, "PNEUMONIA": 0.9}, "PNEUMONIA", "PNEUMONIA", 0.9, 0.25, ("PNEUMONIA",),
                         False, 3.2, "it is a colour image, and chest X-rays are grey", True, 0.9)
    assert views.OOD_BANNER in views.prediction_card(outside) and "colour image" in views.prediction_card(outside)
    below = Assessment({"NORMAL": 0.8, "PNEUMONIA": 0.2}, "NORMAL", "PNEUMONIA", 0.2, 0.25, (), True, 0.5, None,
                       True, 0.9)
    assert "below the operating threshold" in views.prediction_card(below)
