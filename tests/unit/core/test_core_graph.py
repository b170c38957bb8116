from __future__ import annotations

import pytest

from .factories import make_coe, make_graph


def test_priors_follow_routing_times_mix() -> None:
    coe = make_coe(types=4, detector_every=2, no_defect=0.8)
    g = make_graph(coe)
    probs = coe.type_probabilities()  # mix 4,3,2,1
    assert g.prior("cls_0") == pytest.approx(probs["t0"])
    assert g.prior("det_0") == pytest.approx(0.8 * (probs["t0"] + probs["t2"]))
    assert g.predecessors("det_0") == ("cls_0", "cls_2")
    assert g.successors("cls_0") == (("det_0", pytest.approx(0.8)),)
    assert g.successors("cls_1") == ()
    assert g.g.edges["cls_2", "det_0"]["prob"] == pytest.approx(0.8)
    assert g.ranked()[:2] == ["det_0", "cls_0"]  # the shared detector serves two types


def test_online_probabilities_follow_a_changed_mix() -> None:
    g = make_graph(make_coe(types=4, detector_every=0))
    assert g.usage_prob("cls_3") < g.usage_prob("cls_0")
    g.enable_online(half_life=50, prior_weight=20)
    for _ in range(400):  # the board now only has type 3
        g.observe_request()
        g.observe_use("cls_3")
    # the prior keeps prior_weight / (prior_weight + ~half_life/ln 2) of the weight
    assert g.usage_prob("cls_3") > 0.75
    assert g.usage_prob("cls_0") < 0.1
    assert g.ranked()[0] == "cls_3"


def test_offline_graph_ignores_observations() -> None:
    g = make_graph()
    before = g.usage_prob("cls_5")
    g.observe_request()
    g.observe_use("cls_5")
    assert g.usage_prob("cls_5") == before
