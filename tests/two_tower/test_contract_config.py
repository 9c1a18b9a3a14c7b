"""The committed config.pbtxt files agree with two_tower/contract.py, and the contract with the schema."""

from __future__ import annotations

from pathlib import Path

from cascade.runtime import schema
from two_tower import contract
from two_tower.triton_config import GPU_CONFIG_NAME, render_config

MODEL_DIR = Path(__file__).resolve().parents[2] / "triton_models" / contract.MODEL_NAME


def test_committed_cpu_config_is_generated_from_contract():
    assert (MODEL_DIR / "config.pbtxt").read_text() == render_config(kind="KIND_CPU")


def test_committed_gpu_config_is_generated_from_contract():
    text = (MODEL_DIR / "configs" / f"{GPU_CONFIG_NAME}.pbtxt").read_text()
    assert text == render_config(kind="KIND_GPU")
    assert "kind: KIND_GPU" in text


def test_config_names_every_tensor_with_its_type_and_dims():
    text = render_config()
    for spec in contract.INPUTS + contract.OUTPUTS:
        block = text[text.index(f'name: "{spec.name}"') :]
        block = block[: block.index("}")]
        assert f"dims: [ {', '.join(map(str, spec.dims))} ]" in block
        expected = "TYPE_STRING" if spec.dtype == "BYTES" else f"TYPE_{spec.dtype}"
        assert f"data_type: {expected}" in block
    assert f"max_batch_size: {contract.MAX_BATCH_SIZE}" in text
    assert "dynamic_batching" in text
    assert 'backend: "python"' in text


def test_contract_lengths_match_the_feature_schema():
    assert contract.RECENT_ITEMS_LEN == schema.RECENT_ITEMS_LEN
    assert contract.MAX_SEEN_ITEMS == schema.MAX_SEEN_ITEMS


def test_country_code_is_stable_positive_and_missing_is_zero():
    assert (
        contract.country_code("DE") == contract.country_code(b"DE") == contract.country_code(" DE ")
    )
    assert contract.country_code("DE") != contract.country_code("FR")
    assert 0 < contract.country_code("DE") < 2**63
    assert contract.country_code(None) == contract.country_code("") == 0


def test_pad_items():
    assert contract.pad_items([1, 2], 4) == [1, 2, -1, -1]
    assert contract.pad_items(list(range(6)), 4) == [0, 1, 2, 3]


def test_version_policy_is_configurable():
    assert "latest { num_versions: 5 }" in render_config(versions_to_keep=5)


def test_category_codes_are_stable_and_filters_pad_with_minus_one():
    assert contract.category_code("drama") == contract.category_code(" drama ") > 0
    assert contract.category_code("drama") != contract.category_code("Drama")
    assert contract.category_code("") == 0  # an item without category never matches a filter
    codes = contract.pad_codes(["a", "b", "a"])
    assert len(codes) == contract.MAX_FILTER_CATEGORIES
    assert codes[:2] == [contract.category_code("a"), contract.category_code("b")]
    assert codes[2:] == [contract.PAD_CODE] * (contract.MAX_FILTER_CATEGORIES - 2)
