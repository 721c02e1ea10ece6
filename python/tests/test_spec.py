"""canopy.AttentionSpec and canopy.PlannerOptions: every field, aliases, errors."""

import json

import numpy as np
import pytest

import canopy


def test_defaults_match_the_cpp_struct():
    s = canopy.AttentionSpec()
    assert (s.num_qo_heads, s.num_kv_heads, s.head_dim, s.page_size) == (32, 8, 128, 16)
    assert (s.q_dtype, s.kv_dtype, s.o_dtype, s.kv_layout) == ("fp16", "fp16", "fp16", "NHD")
    assert (s.sm_scale, s.logits_soft_cap, s.with_lse) == (0.0, 0.0, False)
    assert s.group_size == 4
    assert s.effective_sm_scale == pytest.approx(1 / np.sqrt(128))


def test_every_field_is_kept():
    s = canopy.AttentionSpec(num_qo_heads=40, num_kv_heads=8, head_dim=256, q_dtype="bf16",
                             kv_dtype="bf16", o_dtype="fp32", kv_layout="HND", page_size=64,
                             sm_scale=0.5, logits_soft_cap=30.0, with_lse=True)
    assert s.to_dict() == {
        "num_qo_heads": 40, "num_kv_heads": 8, "head_dim": 256, "q_dtype": "bf16",
        "kv_dtype": "bf16", "o_dtype": "fp32", "kv_layout": "HND", "page_size": 64,
        "sm_scale": 0.5, "logits_soft_cap": 30.0, "with_lse": True,
    }
    assert s.group_size == 5
    assert s.effective_sm_scale == 0.5
    assert canopy.AttentionSpec(**s.to_dict()) == s
    assert eval(repr(s), {"AttentionSpec": canopy.AttentionSpec}) == s
    assert "head_dim=256" in str(s)


@pytest.mark.parametrize("name", ["fp16", "f16", "float16", "half", np.float16, np.dtype("float16")])
def test_fp16_aliases(name):
    assert canopy.AttentionSpec(dtype=name).q_dtype == "fp16"


@pytest.mark.parametrize("name", ["bf16", "bfloat16"])
def test_bf16_aliases(name):
    s = canopy.AttentionSpec(dtype=name)
    assert (s.q_dtype, s.kv_dtype, s.o_dtype) == ("bf16", "bf16", "bf16")


def test_torch_dtypes():
    torch = pytest.importorskip("torch")
    s = canopy.AttentionSpec(dtype=torch.bfloat16, o_dtype=torch.float32)
    assert (s.q_dtype, s.o_dtype) == ("bf16", "fp32")


def test_per_tensor_dtypes_override_dtype():
    s = canopy.AttentionSpec(dtype="bf16", o_dtype="fp16")
    assert (s.q_dtype, s.kv_dtype, s.o_dtype) == ("bf16", "bf16", "fp16")


def test_spec_is_read_only():
    s = canopy.AttentionSpec()
    with pytest.raises(AttributeError):
        s.head_dim = 64


@pytest.mark.parametrize(
    "kwargs, error, words",
    [
        ({"head_dim": 96}, canopy.NotSupportedError, "head_dim (96) is not supported"),
        ({"num_qo_heads": 30, "num_kv_heads": 8}, canopy.InvalidArgumentError,
         "num_qo_heads (30) must be a multiple of num_kv_heads (8)"),
        ({"num_kv_heads": 0}, canopy.InvalidArgumentError, "num_kv_heads (0) must be positive"),
        ({"page_size": 0}, canopy.InvalidArgumentError, "page_size (0) must be in 1..256"),
        ({"page_size": 257}, canopy.InvalidArgumentError, "page_size (257) must be in 1..256"),
        ({"sm_scale": -1.0}, canopy.InvalidArgumentError, "sm_scale (-1) must be >= 0"),
        ({"logits_soft_cap": float("nan")}, canopy.InvalidArgumentError, "logits_soft_cap"),
        ({"dtype": "int8"}, canopy.InvalidArgumentError, "dtype: dtype 'int8' is unknown"),
        ({"q_dtype": "fp32"}, canopy.NotSupportedError, "q_dtype (fp32) is not supported"),
        ({"kv_dtype": "fp32"}, canopy.NotSupportedError, "kv_dtype (fp32) is not supported"),
        ({"kv_layout": "NDH"}, canopy.InvalidArgumentError, "kv layout 'NDH' is unknown"),
    ],
)
def test_bad_specs_name_the_field_and_value(kwargs, error, words):
    with pytest.raises(error) as info:
        canopy.AttentionSpec(**kwargs)
    assert words in str(info.value)


def test_planner_options_fields():
    o = canopy.PlannerOptions(candidates=["mma_q64_kv64_w4_s3"], row_tiles=[16, 64],
                              allow_absorb=False, allow_split=False, waves=2,
                              min_split_tokens=128, head_packs=False, prefix_blind=True)
    assert o.candidates == ["mma_q64_kv64_w4_s3"]
    assert o.row_tiles == [16, 64]
    assert (o.allow_absorb, o.allow_split, o.head_packs, o.prefix_blind) == (False,) * 3 + (True,)
    assert (o.waves, o.min_split_tokens) == (2, 128)
    assert o.coefficients is None
    o.waves = 4
    assert o.waves == 4


def test_planner_options_coefficients_round_trip():
    doc = json.loads(canopy.default_coefficients())
    doc.update(name="test-gpu", num_sms=20, arch="sm_80")
    coefficients = json.dumps(doc)
    o = canopy.PlannerOptions(coefficients=coefficients)
    parsed = json.loads(o.coefficients)
    assert parsed["num_sms"] == 20 and parsed["name"] == "test-gpu"
    o.coefficients = None
    assert o.coefficients is None


def test_planner_options_errors():
    with pytest.raises(canopy.InvalidArgumentError):
        canopy.PlannerOptions(candidates=["mma_q64_kv64"])
    with pytest.raises(canopy.InvalidArgumentError):
        canopy.PlannerOptions(coefficients="{not json")
    # Keywords and attribute writes are checked by the library's JSON parser.
    with pytest.raises(canopy.InvalidArgumentError, match=r"'waves' must be an integer in \[1, 1024\], got 0"):
        canopy.PlannerOptions(waves=0)
    o = canopy.PlannerOptions()
    with pytest.raises(canopy.InvalidArgumentError, match=r"row_tiles\[1\] must be an integer"):
        o.row_tiles = [16, 0]
    with pytest.raises(canopy.InvalidArgumentError, match="'min_split_tokens'"):
        o.min_split_tokens = -1
    assert o == canopy.PlannerOptions()  # a refused write changes nothing


def test_planner_options_json_and_dict_forms():
    o = canopy.PlannerOptions(candidates=["mma_q64_kv64_w4_s3"], row_tiles=[16, 64],
                              allow_absorb=False, waves=2, min_split_tokens=128,
                              head_packs=False, prefix_blind=True, fuse_merge=True)
    d = o.to_dict()
    assert d == {"format": "canopy-planner-options/1", "candidates": ["mma_q64_kv64_w4_s3"],
                 "row_tiles": [16, 64], "allow_absorb": False, "allow_split": True, "waves": 2,
                 "min_split_tokens": 128, "head_packs": False, "prefix_blind": True,
                 "fuse_merge": True, "coefficients": None}
    assert o.fuse_merge and not canopy.PlannerOptions().fuse_merge
    assert canopy.PlannerOptions.from_dict(d) == o
    assert canopy.PlannerOptions.from_json(o.to_json()) == o
    assert canopy.PlannerOptions.from_json(o.to_json(indent=2)) == o
    assert eval(repr(o), {"canopy": canopy}) == o
    assert canopy.PlannerOptions.from_dict({}) == canopy.PlannerOptions()
    assert canopy.PlannerOptions() != o and o != "not options"
    doc = json.loads(canopy.default_coefficients())
    doc["num_sms"] = 20
    tuned = canopy.PlannerOptions.from_dict({"coefficients": doc})
    assert json.loads(tuned.coefficients)["num_sms"] == 20
    assert tuned.to_dict()["coefficients"]["num_sms"] == 20
    assert canopy.PlannerOptions.from_dict(tuned.to_dict()) == tuned


@pytest.mark.parametrize(
    "options, words",
    [
        ({"wave": 2}, "planner options: unknown key 'wave'"),
        ({"allow_split": 1}, "'allow_split' must be true or false, got 1"),
        ({"candidates": ["mma_q64_kv64"]}, "candidates[0]: kernel config 'mma_q64_kv64'"),
        ({"row_tiles": [16, 5000]}, "row_tiles[1] must be an integer in [1, 4096], got 5000"),
        ({"coefficients": "{}"}, "'coefficients' must be null (the defaults) or a"),
        ({"waves": float("nan")}, "planner options: not valid JSON"),
        ({"waves": object()}, "planner options: the dict is not JSON"),
        ([("waves", 2)], "planner options: expected a dict, got list"),
    ],
)
def test_planner_options_dict_errors(options, words):
    with pytest.raises(canopy.InvalidArgumentError) as info:
        canopy.PlannerOptions.from_dict(options)
    assert words in str(info.value)


def test_kernel_configs():
    s = canopy.AttentionSpec()
    defaults = canopy.default_kernel_configs(s)
    assert defaults and all(c.startswith("mma_") for c in defaults)
    assert set(defaults) <= set(canopy.shipped_kernel_configs(s))
