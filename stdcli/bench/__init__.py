"""`stdcli bench`: measured decoding speed, and step costs against the memory-bandwidth floor.

Three benchmarks (decoding.py, batches.py, profile.py), all usable without the CLI (functions return plain dicts, the
JSON written by `--json`):

`bench_model(lm, items, ...)`: a loaded model on real inputs (videos x questions). For every frame count, after a
warm-up, every input is decoded by three methods in one process, in an order that rotates from input to input and
repeat to repeat:
  - "generate": plain transformers `model.generate(**inputs, do_sample=False, max_new_tokens=N)` (what users run);
  - "dense":    our engine with gamma = 0 (`stdcli.std.generate`, the `--dense` path);
  - "std":      our engine with StD, once per (K, gamma) configuration.
Every method is timed the same way, from outside, with device synchronization (see `TIMING`):
  prefill_s = call -> the first generated token is on the host; decode_s = that moment -> the call returns.
The first token comes out of the prefill, so decode tokens/s = (new tokens - 1) / decode_s, for all three methods.
For transformers the first-token moment is the streamer's second put() (the first is the prompt): on CPU and CUDA,
generate() copies each token to the host before put() (on MPS it streams one step late, which would move one decode
step into prefill_s).
End-to-end speedups compare (prefill_s + decode_s) per new token, summed over all runs of a configuration.

`bench_batches(lm, items, batch_sizes=..., gammas=...)`: folder throughput, as `stdcli ask --batch-size B` runs a
folder. Whole passes over the inputs, timed from outside with device synchronization (video reading, prompts and
prefill included): transformers generate one input at a time, then for every batch size our engine densely (gamma 0)
and with StD at every gamma, through stdcli.batch.answer_videos. After a warm-up pass of every configuration,
`rounds` timed passes of each, the order reversed from round to round. Reports answers per minute, decoded tokens
per second, StD's acceptance, speedups over generate and over dense at the same batch size, and how many answers
equal generate's (every one that does not is listed).

`profile_random_init(alias, ...)`: the real architecture at real scale (stdcli.build.make_config(family, "7b")) with
random weights, nothing downloaded. At several context lengths and batch sizes, the KV cache of the engine is filled
with random data (no prefill), and one dense decode step, one draft step (sparse view of K + text entries) and one
verify of gamma+1 tokens are timed, each against its floor (bytes it must read / bandwidth measured in the same run).
Then the cost model (docs/std.md) gives the speedup StD WOULD have at acceptance rates 0.5..0.95:
a projection, labelled as such everywhere; random weights say nothing about acceptance, so none is ever claimed.

JSON (schema "stdcli-bench/1"; keys are stable, a key that does not apply is null):

  common:  schema, kind ("model" | "batch" | "random-init"), environment{stdcli, torch, transformers, python,
           platform, device, device_name, device_memory_bytes, cuda, cpu_threads, started}, model{...}, settings{...}
  model:   model{name, family, location, dtype, device},
           settings{k, gamma (ints and/or "auto"), frames, max_new_tokens, repeat, warmup_new_tokens, questions, timing,
                    memory_measure},
           inputs[{frames, video, question, sampled_frames, prompt_tokens, visual_tokens, load_video_s, processor_s,
                   vision_encoder_s}],
           configs[{frames, k, gamma, inputs, runs, prompt_tokens, visual_tokens, kept_tokens,
                    generate|dense|std{runs, prefill_s, decode_s, total_s, new_tokens, decoded_tokens,
                                       decode_tokens_per_s, peak_memory_bytes, peak_memory_delta_bytes}
                    (std also: draft_s, verify_s, dense_steps, cycles, drafted, accepted,
                     gammas{"gamma": cycles}, dense_share),
                    decode_speedup_vs_generate, decode_speedup_vs_dense, e2e_speedup_vs_generate,
                    e2e_speedup_vs_dense, acceptance_rate, mean_accepted_length, identical_to_dense,
                    identical_to_generate, dense_identical_to_generate, total,
                    per_input[{video, question, identical_to_dense, dense_answer}]}],
           skipped[{video, question, frames, error}]
  batch:   model{name, family, location, dtype, device},
           settings{batch_sizes, gamma (ints and/or "auto"), k, frames (one count or null), max_new_tokens, rounds,
                    questions, timing, identical},
           inputs[{video, question, generate_answer, generate_new_tokens}] (generate, first timed round),
           configs[{method ("generate" | "dense" | "std"), gamma (null | 0 | int | "auto"), batch_size, runs, answers,
                    failed, seconds, answers_per_min, decoded_tokens, decoded_tokens_per_s, drafted, accepted,
                    acceptance_rate, gammas{"gamma": cycles}, identical_to_generate, total,
                    mismatches[{round, video, question, answer, generate_answer, error}],
                    speedup_vs_generate, speedup_vs_dense}],
           skipped[{video, question, error}]
  random-init: model{alias, family, scale, dtype, device, parameters, weight_bytes, weight_bytes_read_per_step,
                     kv_bytes_per_token, layers (those with a KV cache), linear_layers, linear_state_bytes (a
                     hybrid's: per sequence), kv_heads, q_heads, head_dim, vocab_size},
           settings{contexts, batches, k, gamma, text_tokens, iters, warmup_iters, floor, step_timing},
           bandwidth{copy_bytes_per_s, reduction_bytes_per_s, bytes_per_s, used, buffer_bytes, method},
           points[{context, batch, skipped, memory_needed_bytes, memory_free_bytes,
                   dense_step{s, floor_s, bytes, over_floor},
                   draft_steps[{k, kept_tokens, s, floor_s, bytes, over_floor}],
                   verify_steps[{gamma, tokens, s, floor_s, bytes, over_floor, over_dense_step}]}],
           projection{label, formula, acceptance, rows[{context, batch, k, basis ("measured" | "floor"),
                      acceptance, best_gamma, speedup, by_gamma{gamma: speedup}}]}
"""

from stdcli.lazy import lazy_exports

__all__, __getattr__ = lazy_exports(__name__, {
    "settings": ("BenchError", "parse_int_list", "parse_gamma_list"),
    "common": ("BenchItem", "load_items", "write_json"),
    "decoding": ("bench_model", "model_tables"),
    "batches": ("bench_batches", "batch_tables"),
    "profile": (
        "measure_bandwidth", "profile_random_init", "profile_tables", "project", "projection", "fill_random",
        "seed_fresh_slots", "expected_tokens",
    ),
})
