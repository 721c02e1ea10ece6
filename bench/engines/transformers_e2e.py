"""End to end: transformers' continuous batching (generate_batch) with
attn_implementation="paged|canopy" against the engine's own attention, on a
model built from a real config with random weights (no downloads).

    python bench/engines/transformers_e2e.py check            # correctness
    python bench/engines/transformers_e2e.py bench [--quick]  # throughput table
    python bench/engines/transformers_e2e.py all --out DIR    # both, JSON + table

check: per workload (shared system prompt, join-and-finish, forked sampling,
no sharing), greedy tokens of paged|canopy against paged|sdpa, and the
logits of every step, captured at lm_head: max |difference| relative to the
logits' scale, and at each request's first differing token the reference's
gap between its top two logits (a near tie, within bf16 noise, may flip).

bench: decode throughput (generated tokens / wall time of the decode phase,
from per-token timestamps) and time per output token for 64-256 requests
sharing a 2k-16k-token prompt and a no-sharing workload, for paged|canopy,
paged|sdpa and paged|eager, plus a null attention (writes the cache, returns
zeros: the step's time without attention) to give attention's share.
docs/engines.md has the measured table and the command.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import torch

import canopy
import canopy.transformers as ct
import transformers
from transformers import AttentionInterface, GenerationConfig, LlamaConfig, LlamaForCausalLM

# Llama-3-8B's attention and MLP shapes (GQA 32/8, head_dim 128), fewer layers.
LLAMA3_8B = dict(vocab_size=128256, hidden_size=4096, intermediate_size=14336,
                 num_attention_heads=32, num_key_value_heads=8, head_dim=128,
                 max_position_embeddings=32768, rope_theta=500000.0)


# --tiny: a model small enough for the CPU (a smoke test of this script).
TINY = dict(vocab_size=512, hidden_size=256, intermediate_size=512, num_attention_heads=4,
            num_key_value_heads=2, head_dim=64, max_position_embeddings=32768)
DEVICE = "cuda"


def sync():
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def build_model(layers: int, tiny: bool = False, seed: int = 0):
    torch.manual_seed(seed)
    config = LlamaConfig(num_hidden_layers=layers, **(TINY if tiny else LLAMA3_8B))
    dtype = torch.float32 if DEVICE == "cpu" else torch.bfloat16
    with torch.device(DEVICE):
        model = LlamaForCausalLM(config).to(dtype).eval()
        # Random weights give nearly flat next-token distributions, where bf16
        # noise flips greedy choices; a larger lm_head makes them peaked.
        with torch.no_grad():
            model.lm_head.weight.mul_(8)
    return model


def null_attention(module, query, key, value, attention_mask, scaling=None, **kwargs):
    """Writes the new K/V where the engine asks and returns zeros: the step
    without attention's reads and math (attention's share = the difference)."""
    cache = kwargs["cache"]
    group, layer = cache.layer_index_to_group_indices[module.layer_idx]
    write = kwargs["write_index"][group]
    cache.key_cache[layer].index_copy_(0, write, key[0].transpose(0, 1))
    cache.value_cache[layer].index_copy_(0, write, value[0].transpose(0, 1))
    return torch.zeros_like(query).transpose(1, 2), None


VOCAB = LLAMA3_8B["vocab_size"]


def prompts(num, system_len, tail_len, seed):
    g = torch.Generator().manual_seed(seed)
    system = torch.randint(100, VOCAB, (system_len,), generator=g).tolist()
    return [system + torch.randint(100, VOCAB, (tail_len,), generator=g).tolist()
            for _ in range(num)]


class LogitTap:
    """Keeps every step's lm_head output (float32, on the host)."""

    def __init__(self, model, enabled=True):
        self.steps = []
        self.handle = model.lm_head.register_forward_hook(self.hook) if enabled else None

    def hook(self, module, args, output):
        self.steps.append(output.detach().float().reshape(-1, output.shape[-1]).cpu())

    def close(self):
        if self.handle is not None:
            self.handle.remove()


def generate(model, impl, inputs, max_new_tokens, *, block_size=None, max_batch_tokens=None,
             max_requests=None, num_return_sequences=1, tap=False, timestamps=False):
    model.set_attn_implementation(impl)
    gen = GenerationConfig(max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=None,
                           pad_token_id=0, num_return_sequences=num_return_sequences)
    cpu = {"num_blocks": 256} if DEVICE == "cpu" else {}  # else sized from free memory
    cb = ct.continuous_batching_config(block_size=block_size or (16 if DEVICE == "cpu" else 256),
                                       max_batch_tokens=max_batch_tokens,
                                       max_requests_per_batch=max_requests, return_logprobs=True,
                                       **cpu)
    t = LogitTap(model, tap)
    sync()
    t0 = time.perf_counter()
    try:
        results = model.generate_batch(inputs, generation_config=gen, continuous_batching_config=cb,
                                       warmup=False, record_timestamps=timestamps)
    finally:
        t.close()
    sync()
    wall = time.perf_counter() - t0
    errors = [f"{rid}: {r.error}" for rid, r in results.items() if r.error]
    if errors or len(results) != len(inputs) * num_return_sequences:
        raise RuntimeError(f"{impl}: {len(results)} results, errors {errors[:3]}")
    return results, t.steps, wall


NEAR_TIE_NATS = 0.05  # bf16 logits of magnitude ~10 carry ~0.04 of rounding


def compare(ref, got, ref_steps, got_steps):
    """Token agreement and per-step logit differences of two runs."""
    out = {"requests": len(ref), "identical": 0, "near_tie_divergences": 0, "divergences": 0,
           "max_rel_logit_diff": 0.0, "steps_compared": 0}
    # Steps are comparable while both runs saw the same tokens: up to and
    # including the first step where some row's top token differs.
    for a, b in zip(ref_steps, got_steps):
        if a.shape != b.shape:
            break
        scale = a.abs().max().item() or 1.0
        out["max_rel_logit_diff"] = max(out["max_rel_logit_diff"], (a - b).abs().max().item() / scale)
        out["steps_compared"] += 1
        if not torch.equal(a.argmax(-1), b.argmax(-1)):
            break
    for rid, r in ref.items():
        g = got[rid].generated_tokens
        if g == r.generated_tokens:
            out["identical"] += 1
            continue
        first = next(i for i, (x, y) in enumerate(zip(r.generated_tokens, g)) if x != y)
        # Same context up to here: each run's chosen token was its top logit.
        # If the two choices' log-probabilities are within bf16 noise, the top
        # two were a near tie and either choice is right.
        gap = abs(r.logprobs[first] - got[rid].logprobs[first])
        if gap <= NEAR_TIE_NATS:
            out["near_tie_divergences"] += 1
        else:
            out["divergences"] += 1
    return out


CHECKS = {
    # name: (prompts, max_new_tokens, generate kwargs)
    "shared-prompt": (lambda: prompts(32, 1000, 24, 1), 24, {}),
    "join-and-finish": (lambda: [p[: 600 + 37 * i] for i, p in enumerate(prompts(24, 1000, 24, 2))],
                        20, {"max_requests": 8}),
    # What parallel sampling's forks look like to attention (transformers 5.17's
    # generate_batch refuses greedy num_return_sequences > 1).
    "identical-prompts": (lambda: prompts(4, 700, 10, 3)[:1] * 8, 16, {}),
    "no-sharing": (lambda: [prompts(1, 0, 300 + 50 * i, 10 + i)[0] for i in range(16)], 24, {}),
    "chunked-prefill-mixed": (lambda: prompts(12, 900, 40, 4), 16, {"max_batch_tokens": 512}),
}


TINY_CHECKS = {
    "shared-prompt": (lambda: prompts(6, 60, 5, 1), 6, {}),
    "join-and-finish": (lambda: [p[: 30 + 7 * i] for i, p in enumerate(prompts(6, 60, 5, 2))], 6,
                        {"max_requests": 3}),
    "chunked-prefill-mixed": (lambda: prompts(4, 40, 30, 4), 6, {"max_batch_tokens": 32}),
}


# The noise floor: transformers' own eager attention against its sdpa, on the
# same inputs. Two correct bf16 attentions differ by rounding, and through the
# layers and the random model's flat logits that flips greedy tokens. Canopy
# passes when its logits stay within NOISE_FACTOR x the eager-sdpa difference
# (or NOISE_FLOOR, whichever is larger); where eager's steps cannot be lined
# up with sdpa's (eager runs with at most BASELINE_BATCH_TOKENS per step, or
# its prefill would not fit: 8 GiB score matrices on the H100), when Canopy
# keeps at least as many sequences identical to sdpa's as eager does.
NOISE_FACTOR, NOISE_FLOOR = 2.0, 2e-3
BASELINE_BATCH_TOKENS = 1024


def check_line(name, who, row):
    return (f"check {name} [{who} vs paged|sdpa]: {row['identical']}/{row['requests']} identical, "
            f"{row['near_tie_divergences']} near-tie, {row['divergences']} other divergences, "
            f"max rel logit diff {row['max_rel_logit_diff']:.2e} over {row['steps_compared']} steps")


def run_checks(model, out, checks, baseline="paged|eager"):
    rows = []
    for name, (make, new, kw) in checks.items():
        inputs = make()
        ref, ref_steps, _ = generate(model, "paged|sdpa", inputs, new, tap=True, **kw)
        got, got_steps, _ = generate(model, ct.NAME, inputs, new, tap=True, **kw)
        row = {"workload": name, **compare(ref, got, ref_steps, got_steps), "stats": ct.stats()}
        noise, rule = NOISE_FLOOR, "logit diff"  # the baseline failing leaves the floor
        try:
            base_kw = {"max_batch_tokens": BASELINE_BATCH_TOKENS, **kw}
            base, base_steps, _ = generate(model, baseline, inputs, new, tap=True, **base_kw)
            b = row["baseline"] = {"impl": baseline, **compare(ref, base, ref_steps, base_steps)}
            if b["steps_compared"] > 0:
                noise = max(NOISE_FACTOR * b["max_rel_logit_diff"], NOISE_FLOOR)
            else:
                rule = "identical sequences"
        except Exception as e:
            row["baseline"] = {"impl": baseline, "error": str(e)[:300]}
        row["ok"] = (row["identical"] >= row["baseline"]["identical"]
                     if rule == "identical sequences" else row["max_rel_logit_diff"] <= noise)
        row["rule"] = rule
        row["noise_limit"] = noise
        rows.append(row)
        print(check_line(name, ct.NAME, row) +
              f", KV read fraction {row['stats'].get('kv_read_fraction')}", flush=True)
        if "error" in row["baseline"]:
            print(f"check {name} [{baseline}]: {row['baseline']['error']}", flush=True)
        else:
            print(check_line(name, baseline, row["baseline"]), flush=True)
        why = (f"Canopy's logit diff {row['max_rel_logit_diff']:.2e}, limit {noise:.2e}"
               if rule == "logit diff" else
               f"identical sequences: Canopy {row['identical']}, "
               f"{baseline} {row['baseline']['identical']}")
        print(f"check {name}: {'ok' if row['ok'] else 'FAIL'} ({why})", flush=True)
    out["checks"] = rows
    return all(r["ok"] for r in rows)


BENCH = {
    # name: (requests, system prompt tokens, own tokens, generated tokens)
    "shared-2k-x64": (64, 2048, 32, 128),
    "shared-8k-x128": (128, 8192, 32, 128),
    "shared-16k-x256": (256, 16384, 32, 128),
    "no-sharing-x64": (64, 0, 1024, 128),
}
TINY_BENCH = {"shared-tiny": (8, 96, 8, 8), "no-sharing-tiny": (8, 0, 64, 8)}
QUICK = {"shared-2k-x64": (64, 2048, 32, 64), "shared-8k-x128": (128, 8192, 32, 64),
         "no-sharing-x64": (64, 0, 1024, 64)}


def decode_metrics(results):
    """Decode tokens/s over the decode phase and median time per output token."""
    first = [r.timestamps[0] for r in results.values() if r.timestamps]
    last = [r.timestamps[-1] for r in results.values() if r.timestamps]
    tokens = sum(len(r.generated_tokens) - 1 for r in results.values())
    span = max(last) - max(first)  # after the last prefill finished: decode only
    tpot = [(r.timestamps[-1] - r.timestamps[0]) / (len(r.timestamps) - 1)
            for r in results.values() if r.timestamps and len(r.timestamps) > 1]
    decode_tokens = sum(sum(1 for t in r.timestamps if t > max(first)) for r in results.values())
    return {"decode_tokens_per_s": decode_tokens / span if span > 0 else None,
            "tpot_ms": 1e3 * statistics.median(tpot), "generated_tokens": tokens}


def run_bench(model, out, workloads, impls):
    AttentionInterface.register("paged|null", null_attention)
    rows = []
    for name, (num, system, own, new) in workloads.items():
        inputs = prompts(num, system, own, 7)
        row = {"workload": name, "requests": num, "prompt": system + own, "generated": new}
        for impl in impls:
            try:
                results, _, wall = generate(model, impl, inputs, new, timestamps=True)
                m = decode_metrics(results)
                m["wall_s"] = wall
                if impl == ct.NAME:
                    m["canopy"] = ct.stats()
            except Exception as e:  # e.g. paged|eager out of memory on long prompts
                m = {"error": f"{type(e).__name__}: {str(e)[:200]}"}
            row[impl] = m
            print(f"bench {name} {impl}: {json.dumps({k: v for k, v in m.items() if k != 'canopy'})}",
                  flush=True)
            if DEVICE == "cuda":
                torch.cuda.empty_cache()
        rows.append(row)
    out["bench"] = rows


def table(out):
    lines = ["| workload | impl | decode tok/s | TPOT ms | attention share of TPOT | speedup vs paged|sdpa |",
             "|---|---|---|---|---|---|"]
    for row in out.get("bench", []):
        null = row.get("paged|null", {}).get("tpot_ms")
        sdpa = row.get("paged|sdpa", {}).get("tpot_ms")
        for impl in (ct.NAME, "paged|sdpa", "paged|eager"):
            m = row.get(impl)
            if not m:
                continue
            if "error" in m:
                lines.append(f"| {row['workload']} | {impl} | {m['error'][:60]} | | | |")
                continue
            share = (m["tpot_ms"] - null) / m["tpot_ms"] if null else None
            speed = sdpa / m["tpot_ms"] if sdpa else None
            lines.append(f"| {row['workload']} | {impl} | {m['decode_tokens_per_s']:.0f} | "
                         f"{m['tpot_ms']:.2f} | {share if share is None else f'{share:.2f}'} | "
                         f"{speed if speed is None else f'{speed:.2f}x'} |")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("what", choices=["check", "bench", "all"])
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--quick", action="store_true", help="fewer and shorter bench workloads")
    ap.add_argument("--impls", default="paged|canopy,paged|sdpa,paged|eager,paged|null")
    ap.add_argument("--out", default=os.environ.get("OUT", "."))
    ap.add_argument("--workloads", default="",
                    help="comma list of bench workloads to run (default: all of the chosen set)")
    ap.add_argument("--no-prewarm", action="store_true",
                    help="register Canopy with prewarm=False: kernels compile when a step first "
                         "needs them (shows what prewarming saves)")
    ap.add_argument("--tiny", action="store_true",
                    help="smoke test on the CPU: a tiny float32 model, short workloads")
    args = ap.parse_args()
    global DEVICE, VOCAB
    if args.tiny:
        DEVICE, VOCAB = "cpu", TINY["vocab_size"]
    elif not torch.cuda.is_available():
        print("transformers_e2e: no GPU (torch.cuda.is_available() is False); --tiny runs "
              "a CPU smoke test", file=sys.stderr)
        return 2
    ct.register(prewarm=not args.no_prewarm)
    name = torch.cuda.get_device_name() if DEVICE == "cuda" else "cpu"
    out = {"device": name, "torch": torch.__version__,
           "transformers": transformers.__version__, "canopy": canopy.__version__,
           "model": ("tiny (CPU smoke test)" if args.tiny else "Llama-3-8B shapes")
           + f", {args.layers} layers, random weights"}
    model = build_model(args.layers, tiny=args.tiny)
    ok = True
    if args.what in ("check", "all"):
        ok = run_checks(model, out, TINY_CHECKS if args.tiny else CHECKS)
    if args.what in ("bench", "all"):
        workloads = TINY_BENCH if args.tiny else QUICK if args.quick else BENCH
        if args.workloads:
            names = args.workloads.split(",")
            unknown = [n for n in names if n not in workloads]
            if unknown:
                print(f"transformers_e2e: unknown workloads {unknown}; this set has "
                      f"{sorted(workloads)}", file=sys.stderr)
                return 2
            workloads = {n: workloads[n] for n in names}
        run_bench(model, out, workloads, args.impls.split(","))
        print(table(out))
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "transformers_e2e.json"), "w") as f:
        json.dump(out, f, indent=1, default=str)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
