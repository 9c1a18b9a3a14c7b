"""``cascade up``'s security wiring, without starting anything: the dev key reaches the gateway,
internal services stay on loopback whatever ``--host`` says, the banner shows the key and curl."""

from __future__ import annotations

from pathlib import Path

from cascade import stack
from cascade.keys_cli import ensure_dev_key
from cascade.runtime.paths import Layout
from gateway.edge.keys import KeyRing


def test_children_env_keys_and_loopback(tmp_path: Path) -> None:
    layout = Layout(home=tmp_path)
    keys_file, key = ensure_dev_key(layout=layout, keys_file=tmp_path / "keys.json")
    ports = stack.StackPorts(gateway=18000, mf=18001)
    children = stack._children(
        layout=layout, dataset="tiny", host="0.0.0.0", ports=ports, repository=tmp_path,
        with_triton=False, keys_file=keys_file,
    )  # fmt: skip
    by_name = {c.proc.name: c for c in children}
    mf_env = by_name["fallback_mf"].proc.env
    gw_env = by_name["gateway"].proc.env
    assert mf_env is not None and gw_env is not None
    assert mf_env["MF_HOST"] == "127.0.0.1"  # internal: never the public address
    assert mf_env["MF_DATASET"] == "tiny"  # the MF service refuses ALS trained on other data
    assert gw_env["GATEWAY_HOST"] == "0.0.0.0"
    assert gw_env["GATEWAY_MF_URL"] == "http://127.0.0.1:18001"
    assert gw_env["GATEWAY_API_KEYS_FILE"] == str(keys_file)
    assert KeyRing(keys_file).verify(key)[1] == "ok"
    assert "GATEWAY_ROLLOUT_REDIS_URL" not in gw_env  # no Redis: no rollouts


def test_with_redis_the_gateway_takes_part_in_rollouts(tmp_path: Path) -> None:
    children = stack._children(
        layout=Layout(home=tmp_path), dataset="tiny", host="127.0.0.1",
        ports=stack.StackPorts(gateway=18000, mf=18001), repository=tmp_path,
        with_triton=False, rollout_redis_url="redis://127.0.0.1:6379/0",
    )  # fmt: skip
    gw_env = {c.proc.name: c for c in children}["gateway"].proc.env
    assert gw_env is not None
    assert gw_env["GATEWAY_ROLLOUT_REDIS_URL"] == "redis://127.0.0.1:6379/0"
    # the consumer's CTR hash for this data set's Feast project (cascade_tiny, or
    # CASCADE_FEAST_PROJECT, which a session fixture of the integration tests sets)
    from cascade.runtime.feature_names import project_name
    from events.state import key_prefix

    assert gw_env["GATEWAY_ROLLOUT_EVENTS_CTR_KEY"] == key_prefix(project_name("tiny")) + "ctr"


def test_banner_prints_the_key_and_curl(tmp_path: Path) -> None:
    text = stack._banner(
        host="127.0.0.1", ports=stack.StackPorts(), layout=Layout(home=tmp_path), redis_url=None,
        with_triton=True, api_key="csk_0123456789ab_" + "x" * 43,
    )  # fmt: skip
    assert "curl -s -H 'Authorization: Bearer csk_0123456789ab_" in text
    assert str(tmp_path / "run" / "dev-api-key") in text


def test_triton_listens_on_loopback_with_admin_apis_restricted(tmp_path: Path) -> None:
    from two_tower.triton_server import ADMIN_HEADER, TritonSettings, server_args

    settings = TritonSettings(
        model_repository=tmp_path,
        backends_dir=tmp_path,
        host=stack.INTERNAL_HOST,
        admin_key="k" * 32,
    )
    args = server_args(settings)
    for flag in ("--http-address=127.0.0.1", "--grpc-address=127.0.0.1", "--metrics-address=127.0.0.1",
                 "--model-control-mode=poll"):  # fmt: skip
        assert flag in args
    restricted = [
        a for a in args if a.startswith(("--http-restricted-api=", "--grpc-restricted-protocol="))
    ]
    assert len(restricted) == 2
    for arg in restricted:
        apis = arg.split("=", 1)[1].split(":", 1)[0].split(",")
        assert {"model-repository", "model-config"} <= set(apis)
        assert f":{ADMIN_HEADER}={'k' * 32}" in arg
