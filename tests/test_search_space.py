"""The architecture search space: MobileNet v2 is a point of it, sampling and mutation stay inside it,
descriptions round-trip and bad ones are one-line errors, and a sampled net converts to full int8 that
maps completely to the Edge TPU."""
from __future__ import annotations

import numpy as np
import pytest

from pipeline.core.errors import PipelineError
from pipeline.search.space import ZOO_POINTS, Arch, SearchSpace, build, differences


def test_mobilenet_v2_is_a_point_of_the_space():
    from keras_models import build_model
    from keras_models.macs import count

    ours, zoo = build(ZOO_POINTS["mobilenet_v2"], 1000), build_model("mobilenet_v2", 224, classes=1000, alpha=1.0)
    assert ours.count_params() == zoo.count_params() and count(ours).macs == count(zoo).macs
    assert SearchSpace(resolutions=(224,)).contains(ZOO_POINTS["mobilenet_v2"])


@pytest.mark.parametrize("name", ["mnasnet_b1", "efficientnet_lite0"])
def test_nearby_zoo_nets_are_within_a_fifth_of_their_size(name):
    from keras_models import build_model

    ours, zoo = build(ZOO_POINTS[name], 1000).count_params(), build_model(name, 224, classes=1000).count_params()
    assert 0.8 < ours / zoo < 1.2
    assert differences(ZOO_POINTS["mobilenet_v2"], ZOO_POINTS[name])  # near, not equal


def test_sampling_and_mutation_stay_in_the_space_and_round_trip():
    space, rng = SearchSpace(), np.random.default_rng(0)
    arch = space.sample(rng)
    for _ in range(50):
        child = space.mutate(arch, rng)
        assert child != arch and space.contains(child) and len(differences(arch, child)) >= 1
        assert Arch.from_json(child.to_json()) == child and SearchSpace.from_json(space.to_json()) == space
        arch = child
    assert space.size() > 1e20
    small, large = build(space.smallest(), 10), build(space.largest(), 10)
    assert small.count_params() < large.count_params()


def test_bad_descriptions_are_one_line_errors():
    with pytest.raises(PipelineError, match="not an architecture"):
        Arch.from_json({"resolution": 64})
    with pytest.raises(PipelineError, match="kernel 4 must be odd"):
        SearchSpace(kernels=(3, 4)).check()
    with pytest.raises(PipelineError, match="not a search space"):
        SearchSpace.from_json({"kernels": [3]})


def test_deployability_is_decided_before_training():
    from pipeline.search.deployable import DeployabilityCheck
    from pipeline.search.space import Block, Stage

    relu = SearchSpace(resolutions=(32,), widths=(0.5,), depths=(1,), acts=("relu6",)).sample(np.random.default_rng(3))
    edgetpu = DeployabilityCheck("edgetpu", classes=10)
    verdict = edgetpu.verdict(relu)
    assert verdict.deployable and verdict.flatbuffer and edgetpu.verdict(relu) is verdict  # cached
    swish = Arch(relu.resolution, relu.stages[:1] + (Stage(0.5, False, "hard_swish", (Block(3, 3),)),) + relu.stages[2:])
    refused = edgetpu.verdict(swish)
    assert not refused.deployable and any("HARD_SWISH" in r for r in refused.reasons)
    assert DeployabilityCheck("cpu-int8", classes=10).verdict(swish).deployable
    with pytest.raises(PipelineError, match="unknown search target"):
        DeployabilityCheck("gpu", classes=10)
