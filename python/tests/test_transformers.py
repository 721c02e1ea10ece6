"""canopy.transformers on the CPU: transformers' continuous batching
(generate_batch) with attn_implementation="paged|canopy" against the engine's
own "paged|sdpa", on small Llama/Qwen-shaped models with random weights.
Decode rows run Canopy's float64 CPU executor; GPU runs are
bench/engines/transformers_e2e.py's. Skips (visibly) without torch and
transformers 5.x."""

import pytest

torch = pytest.importorskip("torch", reason="canopy.transformers tests need torch")
transformers = pytest.importorskip("transformers", reason="canopy.transformers tests need transformers")
pytest.importorskip("psutil", reason="transformers' continuous batching on the CPU needs psutil")
if int(transformers.__version__.split(".")[0]) < 5:
    pytest.skip(f"canopy.transformers needs transformers 5.x, found {transformers.__version__}",
                allow_module_level=True)

import canopy  # noqa: E402
import canopy.transformers as ct  # noqa: E402
from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM  # noqa: E402

VOCAB = 96


def tiny_llama(seed=0, heads=4, kv_heads=2, head_dim=64, layers=2, **extra):
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=VOCAB, hidden_size=heads * head_dim, intermediate_size=256,
        num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv_heads,
        head_dim=head_dim, max_position_embeddings=1024, **extra,
    )
    model = LlamaForCausalLM(config).eval()
    # Larger logits than the default init: greedy choices far from ties.
    with torch.no_grad():
        model.lm_head.weight.mul_(8)
    return model


def generate(model, implementation, prompts, max_new_tokens, block_size=16, max_batch_tokens=256,
             max_requests_per_batch=None):
    model.set_attn_implementation(implementation)
    generation = GenerationConfig(max_new_tokens=max_new_tokens, do_sample=False,
                                  eos_token_id=None, pad_token_id=0)
    cb = ct.continuous_batching_config(
        block_size=block_size, num_blocks=128, max_batch_tokens=max_batch_tokens,
        max_requests_per_batch=max_requests_per_batch,
    )
    results = model.generate_batch(prompts, generation_config=generation,
                                   continuous_batching_config=cb, warmup=False)
    assert len(results) == len(prompts), "some requests did not finish"
    out = {}
    for rid, r in results.items():
        assert getattr(r, "error", None) in (None, ""), f"{rid}: {r.error}"
        out[rid] = list(r.generated_tokens)
    return out


def prompts_sharing(system_len, tails, seed=0):
    g = torch.Generator().manual_seed(seed)
    system = torch.randint(1, VOCAB, (system_len,), generator=g).tolist()
    return [system + torch.randint(1, VOCAB, (n,), generator=g).tolist() for n in tails]


@pytest.fixture(scope="module")
def name():
    return ct.register()


def test_register_is_idempotent_and_named(name):
    assert name == "paged|canopy" == ct.register()
    from transformers import AttentionInterface

    assert AttentionInterface._global_mapping["paged|canopy"] is ct.canopy_paged_attention
    with pytest.raises(ValueError, match="must start with 'paged|'"):
        ct.register("canopy")


@pytest.mark.parametrize(
    "case, prompts, max_new_tokens",
    [
        # 8 requests sharing a 40-token system prompt (2 shared blocks of 16).
        ("shared-prompt", prompts_sharing(40, [3, 5, 7, 9, 4, 6, 8, 2]), 12),
        # Nothing shared.
        ("no-sharing", [prompts_sharing(0, [n], seed=s)[0] for s, n in enumerate([20, 9, 33, 17])], 10),
        # Requests finish at different steps and new ones join mid-run (the
        # engine admits at most 3 at once).
        ("join-and-finish", prompts_sharing(35, [2, 9, 4, 11, 6, 3, 8]), 9),
    ],
)
def test_generate_batch_matches_paged_sdpa(name, case, prompts, max_new_tokens):
    model = tiny_llama()
    kwargs = {"max_requests_per_batch": 3} if case == "join-and-finish" else {}
    want = generate(model, "paged|sdpa", prompts, max_new_tokens, **kwargs)
    got = generate(model, name, prompts, max_new_tokens, **kwargs)
    assert got == want
    s = ct.stats()
    assert s["steps"] > 0 and s["decode_rows"] > 0 and s["layer_runs"] == 2 * s["steps"]
    if case == "shared-prompt":
        assert s["kv_read_fraction"] < 0.8, ct.report()
    if case == "no-sharing":
        assert s["kv_bytes"] == s["blind_kv_bytes"]
    if case == "join-and-finish":
        assert s["full_plans"] >= 2, "arrivals and departures plan from scratch"


def test_identical_prompts_share_every_complete_block(name):
    # What parallel sampling's forks look like to attention: several requests
    # with one prompt, sharing all its complete blocks. (transformers 5.17's
    # generate_batch with num_return_sequences > 1 returns one result per
    # prompt on the CPU even with paged|sdpa, so forks are built as copies.)
    model = tiny_llama(seed=1)
    prompts = prompts_sharing(37, [4]) * 4
    want = generate(model, "paged|sdpa", prompts, 8)
    got = generate(model, name, prompts, 8)
    assert got == want
    assert ct.stats()["kv_read_fraction"] < 0.6


def test_chunked_prefill_and_mixed_steps(name):
    # A token budget smaller than the prompts: prefills are chunked (rows with a
    # past and several new tokens) and share steps with decoding rows.
    model = tiny_llama(seed=2)
    prompts = prompts_sharing(20, [30, 3, 50, 7])
    want = generate(model, "paged|sdpa", prompts, 10, max_batch_tokens=24)
    got = generate(model, name, prompts, 10, max_batch_tokens=24)
    assert got == want
    assert ct.stats()["mixed_steps"] > 0


def test_report_names_the_reads(name):
    model = tiny_llama()
    generate(model, name, prompts_sharing(40, [3, 5, 7]), 4)
    text = ct.report()
    assert "decode steps planned" in text and "prefix-blind attention would read" in text
    s = ct.stats()
    # The slowest step is recorded (a kernel compiled mid-decode would show
    # there); a CPU model prewarms nothing.
    assert 0 < s["max_plan_seconds"] <= s["plan_seconds"]
    assert s["prewarm_seconds"] == 0.0


@pytest.mark.parametrize(
    "config, message",
    [
        (LlamaConfig(num_attention_heads=4, hidden_size=384, head_dim=96), "head_dim 96"),
        (transformers.MistralConfig(sliding_window=64, num_attention_heads=4, hidden_size=256),
         "sliding-window"),
    ],
)
def test_unsupported_models_are_named(config, message):
    ok, why = ct.supported(config)
    assert not ok and message in why
    assert ct.attn_implementation(config) == "paged|sdpa"


def test_supported_models():
    assert ct.supported(tiny_llama().config) == (True, "")
    qwen = transformers.Qwen2Config(num_attention_heads=4, num_key_value_heads=2, hidden_size=256)
    assert ct.supported(qwen) == (True, "")


def test_an_unsupported_head_dim_fails_clearly_when_generating(name):
    model = tiny_llama(head_dim=32, heads=4)
    model.set_attn_implementation(name)
    with pytest.raises(canopy.NotSupportedError, match="head_dim 32"):
        attn = model.model.layers[0].self_attn
        q = torch.zeros(1, 4, 1, 32)
        k = torch.zeros(1, 2, 1, 32)
        ct.canopy_paged_attention(attn, q, k, k, None, scaling=0.1, cache=_FakeCache(32))


class _FakeCache:
    """Just enough of a PagedAttentionCache to reach the adapter's checks."""

    def __init__(self, head_dim):
        self.num_groups = 1
        self.num_sliding_attention_groups = 0
        self.num_blocks = 4
        self.block_size = 16
        self.key_cache = [torch.zeros(6 * 16, 2, head_dim)]
        self.value_cache = [torch.zeros(6 * 16, 2, head_dim)]


def test_outside_continuous_batching_is_an_error(name):
    model = tiny_llama()
    attn = model.model.layers[0].self_attn
    q = torch.zeros(1, 4, 1, 64)
    with pytest.raises(ValueError, match="without a paged attention cache"):
        ct.canopy_paged_attention(attn, q, q[:, :2], q[:, :2], None)
