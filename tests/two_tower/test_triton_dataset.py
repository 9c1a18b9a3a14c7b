"""A Two-Tower version refuses requests for another data set (issue 19): with the gateway's
``GATEWAY_DATASET_ID`` sent as the request parameter ``cascade_dataset``, a real tritonserver
answers a version trained on other data with an error naming both data sets, and serves the
matching one or a request without the parameter."""

from __future__ import annotations

import dataclasses
import shutil

import numpy as np
import pytest

from cascade.data.features import user_state
from tests.two_tower.test_triton_integration import _wire_rows
from two_tower import contract
from two_tower.export import TEMPLATE_NAME, export_to_triton, model_dir
from two_tower.triton_server import DEFAULT_MODEL_REPOSITORY, TritonProcess, TritonSettings

pytestmark = pytest.mark.integration
DEMO = {"dataset": "demo", "checksum": "a" * 64, "split": None}


@pytest.fixture(scope="module")
def server(tiny_trained, tmp_path_factory):
    repo = tmp_path_factory.mktemp("triton_repo")
    model_dir(repo).mkdir()
    shutil.copy(
        model_dir(DEFAULT_MODEL_REPOSITORY) / TEMPLATE_NAME, model_dir(repo) / TEMPLATE_NAME
    )
    trained = dataclasses.replace(tiny_trained, metadata={**tiny_trained.metadata, "data": DEMO})
    export_to_triton(trained, repository=repo)
    proc = TritonProcess(
        TritonSettings(
            model_repository=repo,
            backends_dir=tmp_path_factory.mktemp("backends"),
            http_port=0,
            grpc_port=0,
            metrics_port=0,
            otlp_endpoint=None,
        ),
        log_path=repo / "tritonserver.log",
    )
    proc.start()
    try:
        proc.wait_ready(timeout=180)
        yield proc
    finally:
        proc.stop()


def _infer(server, arrays, parameters=None):
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(server.grpc_url)
    try:
        inputs = []
        for spec in contract.INPUTS:
            tensor = grpcclient.InferInput(spec.name, list(arrays[spec.name].shape), spec.dtype)
            tensor.set_data_from_numpy(arrays[spec.name])
            inputs.append(tensor)
        result = client.infer(contract.MODEL_NAME, inputs, parameters=parameters)
        return result.as_numpy(contract.ITEM_IDS)
    finally:
        client.close()


def test_a_version_trained_on_other_data_refuses_the_request(server, tiny_interactions):
    from tritonclient.utils import InferenceServerException

    state = user_state(tiny_interactions)
    arrays = _wire_rows(state, state["user_id"].to_numpy()[:2])
    served = _infer(server, arrays, {"cascade_dataset": "demo:aaaaaaaaaaaa"})
    assert served.shape[0] == 2 and (served[:, 0] >= 0).all()
    assert np.array_equal(_infer(server, arrays), served)  # no parameter: no check
    with pytest.raises(InferenceServerException) as err:
        _infer(server, arrays, {"cascade_dataset": "tiny:bbbbbbbbbbbb"})
    assert (
        "two_tower version 1 was trained on data set demo:aaaaaaaaaaaa, not tiny:bbbbbbbbbbbb"
        in str(err.value)
    )


@pytest.mark.parametrize(
    ("dataset_id", "served"),
    [("demo:aaaaaaaaaaaa", True), ("", True), ("tiny:bbbbbbbbbbbb", False)],
)
def test_the_gateways_client_sends_its_data_set(server, tiny_interactions, dataset_id, served):
    """The gateway's Triton tier with GATEWAY_DATASET_ID: the matching data set (or none) is
    served; another is an upstream error that says why (the chain falls back and logs it)."""
    import asyncio

    from gateway.errors import UpstreamError
    from gateway.tiers.triton import TritonPrimary
    from gateway.tiers.types import UserFeatures

    user = int(user_state(tiny_interactions)["user_id"].iloc[0])

    async def ask():
        primary = TritonPrimary(url=server.grpc_url, dataset_id=dataset_id)
        try:
            return await primary.recommend(
                UserFeatures(user_id=user), k=5, exclude=[], timeout_s=10.0
            )
        finally:
            await primary.close()

    if served:
        assert len(asyncio.run(ask()).item_ids) == 5
    else:
        with pytest.raises(UpstreamError, match="trained on data set demo:aaaaaaaaaaaa, not tiny"):
            asyncio.run(ask())
