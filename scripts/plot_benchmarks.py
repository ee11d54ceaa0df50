#!/usr/bin/env python3
"""Figures and tables of docs/benchmarks.md, from the raw JSON of `stdcli bench` (schema "stdcli-bench/1").

Needs matplotlib, which is NOT a dependency of stdcli. Run it with any Python that has it, for example:

    python -m venv /tmp/plotenv && /tmp/plotenv/bin/pip install matplotlib
    /tmp/plotenv/bin/python scripts/plot_benchmarks.py

It imports nothing from stdcli (json, pathlib, argparse and matplotlib only). It reads every docs/bench/*/*.json
(one folder per machine, e.g. gpu-h200/, cpu/), by its "kind":
  - "random-init": step costs of the Qwen2-VL-7B shape with random weights, and the cost-model PROJECTION;
  - "model":       a real model (the built-in one) decoded by transformers generate, our dense path and StD.
It writes into docs/bench/:
  step_costs_7b.png, projected_speedup_7b.png, verify_vs_gamma_7b.png   (from the "random-init" files)
  builtin_tokens_per_s.png                                             (from the "model" files, a panel per folder)
  inflated_draft_kinds.png   (from scripts/bench_inflated.py's inflated_*.json: measured StD over dense by kind)
and rewrites the generated tables of docs/benchmarks.md, the text between `<!-- generated:NAME -->` and
`<!-- /generated:NAME -->` (nothing else in that file is touched; --no-doc leaves it alone). Every number in those
tables is read or computed from the JSON; nothing is typed in by hand.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = "stdcli-bench/1"
DPI = 120
PROFILE_ACCEPTANCE = (0.66, 0.82)  # the paper's Qwen2-VL-7B acceptance range (MLVU 66.1%, VideoMME long 81.8%)
VERIFY_GAMMA = 4  # the verify width shown next to the dense and draft steps
COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"]
METHOD_COLORS = {"generate": "#7f7f7f", "dense": "#1f77b4"}
STD_COLORS = ["#d62728", "#ff7f0e", "#9467bd", "#2ca02c"]


# --- loading --------------------------------------------------------------------------------------------------------


def load(bench_dir: Path) -> list[dict]:
    reports = []
    for path in sorted(bench_dir.glob("*/*.json")):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            print(f"skipping {path}: {err}")
            continue
        if not isinstance(data, dict) or data.get("schema") != SCHEMA:
            print(f"skipping {path}: not {SCHEMA}")
            continue
        if data.get("kind") not in ("model", "random-init"):
            print(f"skipping {path}: unknown kind {data.get('kind')!r}")
            continue
        data["_path"], data["_dir"] = path, path.parent.name
        reports.append(data)
    return reports


def by_dir(reports: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for r in reports:
        out.setdefault(r["_dir"], []).append(r)
    return out


def profiles_7b(reports: list[dict]) -> dict[str, dict]:
    """folder -> {"points": {(context, batch): point}, "rows": projection rows, "reports": [...]} of the 7B shape."""
    out: dict[str, dict] = {}
    for r in reports:
        if r["kind"] != "random-init" or r["model"].get("scale") != "7b" or not is_sparse_profile(r):
            continue
        group = out.setdefault(r["_dir"], {"points": {}, "rows": [], "reports": [], "files": {}})
        group["reports"].append(r)
        for p in r["points"]:
            group["points"][(p["context"], p["batch"])] = p
            group["files"][(p["context"], p["batch"])] = r["_path"].name
        group["rows"] += (r.get("projection") or {}).get("rows") or []
    for group in out.values():
        group["points"] = dict(sorted(group["points"].items()))
        # a point measured in several files: the last file's rows stand, as its points do
        group["rows"] = list({(r["context"], r["batch"], r["k"], r["basis"], r["acceptance"]): r
                              for r in group["rows"]}.values())
    return out


VARIANTS_NOT_KEPT = ("_split_k", "_multitile16")


def is_sparse_profile(report: dict) -> bool:
    """A step-cost profile of the sparse draft alone, measured with nothing else on the device. The draft-kind
    comparisons have their own figure (plot_draft_kinds); the invariance runs shared the GPU with other jobs, so
    only their answers (identical or not) are figures, not their step times."""
    drafts = report["settings"].get("draft", ["sparse"])
    return drafts == ["sparse"] and not report["_path"].name.startswith("invariance_") and not variant_not_kept(report)


def variant_not_kept(report: dict) -> bool:
    """A kernel variant that was measured and not kept (its files are named *_split_k, *_multitile16)."""
    return report["_path"].stem.endswith(VARIANTS_NOT_KEPT)


def draft_kind_reports(reports: list[dict]) -> list[dict]:
    """Profiles of several draft kinds, but the ones of a kernel variant that was measured and not kept."""
    return [r for r in reports if r["kind"] == "random-init" and len(r["settings"].get("draft", [])) > 1
            and not variant_not_kept(r)]


def live(points: dict) -> dict:
    return {key: p for key, p in points.items() if not p.get("skipped") and p.get("dense_step")}


def device_label(reports: list[dict]) -> str:
    env = reports[0]["environment"]
    return env.get("device_name") or env.get("device") or reports[0]["_dir"]


def ctx_label(context: int) -> str:
    return f"{context // 1024}K" if context % 1024 == 0 else str(context)


def point_label(context: int, batch: int) -> str:
    return f"{ctx_label(context)} context, batch {batch}"


def verify_at(point: dict, gamma: int) -> dict | None:
    return next((v for v in point["verify_steps"] if v["gamma"] == gamma), None)


def gamma_label(gamma) -> str:
    return f"γ={gamma}"


# --- figures --------------------------------------------------------------------------------------------------------


def shown(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def save(fig, path: Path) -> None:
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    print(f"wrote {shown(path)} ({path.stat().st_size // 1024} KB)")


def plot_step_costs(groups: dict[str, dict], out: Path, per_row: int = 4) -> None:
    live_groups = [(name, g) for name, g in groups.items() if live(g["points"])]
    if not live_groups:
        return
    # each group's points, in rows of at most `per_row` panels
    rows = [(name, group, items[i:i + per_row]) for name, group in live_groups
            for items in [list(live(group["points"]).items())] for i in range(0, len(items), per_row)]
    ncols = max(len(points) for _, _, points in rows)
    fig, axes = plt.subplots(len(rows), ncols, figsize=(3.2 * ncols, 3.9 * len(rows)), squeeze=False)
    for r, (name, group, points) in enumerate(rows):
        ks = group["reports"][0]["settings"]["k"]
        for c, ((context, batch), p) in enumerate(points):
            ax = axes[r][c]
            steps = [("dense", p["dense_step"])]
            steps += [(f"draft\nK={d['k']}", d) for d in p["draft_steps"] if d["k"] in ks]
            v = verify_at(p, VERIFY_GAMMA)
            if v:
                steps.append((f"verify\nγ={VERIFY_GAMMA}", v))
            x = range(len(steps))
            measured = [s["s"] * 1e3 for _, s in steps]
            floor = [s["floor_s"] * 1e3 for _, s in steps]
            ax.bar([i - 0.2 for i in x], measured, 0.4, color="#1f77b4", label="measured")
            ax.bar([i + 0.2 for i in x], floor, 0.4, color="#bbbbbb", hatch="//", edgecolor="#777777",
                   label="bandwidth floor")
            for i, (_, s) in enumerate(steps):
                ax.annotate(f"×{s['s'] / s['floor_s']:.2f}", (i - 0.2, s["s"] * 1e3), ha="center", va="bottom",
                            fontsize=8, xytext=(0, 2), textcoords="offset points")
            ax.set_xticks(list(x), [label for label, _ in steps], fontsize=8)
            ax.set_title(point_label(context, batch), fontsize=9)
            ax.set_ylim(0, max(measured) * 1.15)
            ax.grid(axis="y", alpha=0.3)
            if c == 0:
                ax.set_ylabel(f"{name}: ms per step" if len(live_groups) > 1 else "ms per step")
        for c in range(len(points), ncols):
            axes[r][c].axis("off")
    names = ", ".join(device_label(g["reports"]) for _, g in live_groups)
    fig.suptitle(f"Qwen2-VL-7B shape, random bf16 weights ({names}): step cost vs bandwidth floor "
                 "(×N = measured / floor)", fontsize=10)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=2, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    save(fig, out)


def plot_projection(groups: dict[str, dict], out: Path) -> None:
    panels = [(name, g) for name, g in groups.items() if g["rows"]]
    if not panels:
        return
    fig, axes = plt.subplots(1, len(panels), figsize=(9.6 * len(panels), 4.8), squeeze=False)
    for ax, (_name, group) in zip(axes[0], panels, strict=False):
        k = min(row["k"] for row in group["rows"])
        keys = sorted({(row["context"], row["batch"]) for row in group["rows"] if row["k"] == k})
        for i, (context, batch) in enumerate(keys):
            for basis, style in (("measured", "-"), ("floor", "--")):
                rows = sorted((row for row in group["rows"] if (row["context"], row["batch"], row["k"],
                               row["basis"]) == (context, batch, k, basis)), key=lambda row: row["acceptance"])
                if rows:
                    ax.plot([row["acceptance"] for row in rows], [row["speedup"] for row in rows], style,
                            color=COLORS[i % len(COLORS)], marker="o" if basis == "measured" else None,
                            markersize=3, label=f"{point_label(context, batch)}, {basis} costs")
        ax.axhline(1.0, color="black", linewidth=0.8, label="dense decoding (1.0)")
        for a in PROFILE_ACCEPTANCE:
            ax.axvline(a, color="#999999", linewidth=0.6, linestyle=":")
        ax.text(sum(PROFILE_ACCEPTANCE) / 2, 1.0, "paper's Qwen2-VL-7B\nacceptance range",
                transform=ax.get_xaxis_transform(),
                ha="center", va="top", fontsize=7, color="#555555")
        ax.set_xlabel("per-token acceptance rate (ASSUMED, not measured)")
        ax.set_ylabel("projected StD speedup over dense (×)")
        ax.set_title(f"{device_label(group['reports'])}, K={k}, best γ (1..9) per acceptance", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.suptitle("PROJECTION (cost model, not a measurement; random weights say nothing about acceptance)\n"
                 "StD speedup over dense with the step costs measured (solid) or at their bandwidth floors (dashed)",
                 fontsize=9.5)
    fig.tight_layout()
    save(fig, out)


def plot_draft_kinds(reports: list[dict], out: Path, acceptance: float = 0.8) -> None:
    """StD over dense, projected from the measured step costs (solid) and from their floors (dashed), against the
    context, one line per draft kind, one panel per batch size."""
    if not reports:
        return
    report = max(reports, key=lambda r: r["environment"]["started"])  # the latest kernels
    rows = [row for row in report["projection"]["rows"] if row["acceptance"] == acceptance]
    batches = sorted({row["batch"] for row in rows})
    kinds = list(dict.fromkeys(row["draft"] for row in rows))
    fig, axes = plt.subplots(1, len(batches), figsize=(5.2 * len(batches), 4.2), squeeze=False, sharey=True)
    for ax, batch in zip(axes[0], batches, strict=True):
        for i, kind in enumerate(kinds):
            for basis, style in (("measured", "-"), ("floor", "--")):
                mine = sorted((row for row in rows if row["batch"] == batch and row["draft"] == kind
                               and row["basis"] == basis), key=lambda row: row["context"])
                ax.plot([ctx_label(row["context"]) for row in mine], [row["speedup"] for row in mine], style,
                        color=COLORS[i % len(COLORS)], marker="o" if basis == "measured" else None,
                        label=f"{kind} draft, {basis} costs")
        ax.axhline(1.0, color="black", linewidth=0.8)
        ax.set_xlabel("context (tokens)")
        ax.set_title(f"batch {batch}", fontsize=9)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel(f"projected StD speedup over dense (×), acceptance {acceptance}")
    axes[0][-1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.suptitle(f"{device_label([report])}, {report['model']['family']} {report['model']['scale']} shape: each draft "
                 "kind, best γ per point (PROJECTION from step costs; acceptance assumed)", fontsize=9)
    fig.tight_layout()
    save(fig, out)


def plot_verify(groups: dict[str, dict], out: Path) -> None:
    panels = [(name, g) for name, g in groups.items() if live(g["points"])]
    if not panels:
        return
    fig, axes = plt.subplots(1, len(panels), figsize=(6.4 * len(panels), 4.2), squeeze=False)
    for ax, (_name, group) in zip(axes[0], panels, strict=False):
        for i, ((context, batch), p) in enumerate(live(group["points"]).items()):
            steps = sorted(p["verify_steps"], key=lambda v: v["gamma"])
            ax.plot([v["gamma"] for v in steps], [v["s"] / p["dense_step"]["s"] for v in steps], "-o",
                    color=COLORS[i % len(COLORS)], markersize=4, label=point_label(context, batch))
        ax.axhline(1.0, color="black", linewidth=0.8, label="one dense step (what the floors give: ≈1)")
        ax.set_xlabel("γ (drafts verified; the verify reads γ+1 new tokens)")
        ax.set_ylabel("verify cost / dense step cost (×)")
        ax.set_xticks(sorted({v["gamma"] for p in live(group["points"]).values() for v in p["verify_steps"]}))
        ax.set_ylim(0, max(v["s"] / p["dense_step"]["s"] for p in live(group["points"]).values()
                           for v in p["verify_steps"]) * 1.3)
        ax.set_title(f"Qwen2-VL-7B shape, random bf16 weights, {device_label(group['reports'])}", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="upper left", ncol=2)
    fig.tight_layout()
    save(fig, out)


def model_configs(reports: list[dict]) -> dict:
    """frames -> list of configs (each with its generate, dense and std summaries), over the folder's "model" files."""
    out: dict = {}
    for r in reports:
        if r["kind"] == "model":
            for c in r["configs"]:
                out.setdefault(c["frames"], []).append(c)
    return dict(sorted(out.items(), key=lambda item: (item[0] is None, item[0] or 0)))


def std_label(c: dict) -> str:
    return f"StD K={c['k']} {gamma_label(c['gamma'])}"


def plot_builtin(dirs: dict[str, list[dict]], out: Path) -> None:
    panels = [(name, rs) for name, rs in dirs.items() if model_configs(rs)]
    if not panels:
        return
    fig, axes = plt.subplots(1, len(panels), figsize=(6.4 * len(panels), 4.3), squeeze=False)
    for ax, (name, reports) in zip(axes[0], panels, strict=False):
        configs = model_configs(reports)
        std_keys = list(dict.fromkeys(std_label(c) for cs in configs.values() for c in cs))
        series = ["generate", "dense"] + std_keys
        width = 0.8 / len(series)
        for f, (_frames, cs) in enumerate(configs.items()):
            values = {"generate": cs[0]["generate"], "dense": cs[0]["dense"]}
            values.update({std_label(c): c["std"] for c in cs})
            for j, key in enumerate(series):
                m = values.get(key)
                if not m or m.get("decode_tokens_per_s") is None:
                    continue
                x = f - 0.4 + width * (j + 0.5)
                color = METHOD_COLORS.get(key) or STD_COLORS[std_keys.index(key) % len(STD_COLORS)]
                label = {"generate": "transformers generate", "dense": "our dense path"}.get(key, key)
                ax.bar(x, m["decode_tokens_per_s"], width, color=color, label=label if f == 0 else None)
                note = f"{m['decode_tokens_per_s']:.1f}"
                if key in std_keys and not m.get("cycles"):
                    note += "\n(0 cycles)"
                ax.annotate(note, (x, m["decode_tokens_per_s"]), ha="center", va="bottom", fontsize=7,
                            xytext=(0, 2), textcoords="offset points")
        ax.set_xticks(range(len(configs)), [f"{frames} frames\n({cs[0]['prompt_tokens']:.0f} prompt tokens)"
                                            for frames, cs in configs.items()], fontsize=8)
        top = max(m["decode_tokens_per_s"] or 0 for cs in configs.values() for c in cs
                  for m in (c["generate"], c["dense"], c["std"]))
        ax.set_ylim(0, top * 1.6)
        ax.set_ylabel("decode tokens/s (after the first token)")
        model = reports[0]["model"]
        ax.set_title(f"{name}: {model.get('name')} model on {device_label(reports)} ({model.get('dtype')})",
                     fontsize=9)
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=8, loc="upper left", ncol=3)
    fig.suptitle("Built-in model: decode speed of transformers generate, our dense path and StD (greedy)", fontsize=10)
    fig.tight_layout()
    save(fig, out)


def latest_inflated(bench_dir: Path) -> list[dict]:
    """The newest run of scripts/bench_inflated.py per device and batch size (every answer decoded past its end)."""
    newest: dict[tuple, dict] = {}
    for path in sorted(bench_dir.glob("*/inflated_*.json")):
        data = json.loads(path.read_text())
        if not data.get("past_end"):
            continue
        data["_file"] = f"{path.parent.name}/{path.name}"
        key = (data["environment"]["device_name"], data["batch"])
        if key not in newest or data["environment"]["started"] > newest[key]["environment"]["started"]:
            newest[key] = data
    return [newest[key] for key in sorted(newest)]


def plot_inflated(runs: list[dict], out: Path) -> None:
    """Measured decode speed of StD over our dense path on the inflated built-in model: per run (device, batch,
    context) a group of bars, one per draft kind at its best fixed gamma, and auto."""
    if not runs:
        return
    fig, ax = plt.subplots(figsize=(9, 4.4))
    kinds = ["sparse", "int8", "int4", "auto"]
    width = 0.8 / len(kinds)
    labels = []
    for i, run in enumerate(runs):
        point = run["points"][-1]
        dense = next(c["tokens_per_s"] for c in point["configs"] if c["gamma"] == 0)
        for j, kind in enumerate(kinds):
            configs = [c for c in point["configs"] if c["draft"] == kind]
            if not configs:
                continue
            best = max(configs, key=lambda c: c["tokens_per_s"])
            speedup = best["tokens_per_s"] / dense
            x = i - 0.4 + width * (j + 0.5)
            ax.bar(x, speedup, width, color=COLORS[j], label=kind if i == 0 else None)
            ax.annotate(f"{speedup:.2f}×\n{gamma_label(best['gamma'])}", (x, speedup), ha="center", va="bottom",
                        fontsize=7, xytext=(0, 2), textcoords="offset points")
        tokens = max(point["prompt_tokens"])
        labels.append(f"{run['_file']}\nbatch {run['batch']} x {ctx_label(tokens)} tokens\n(dense {dense:.0f} tok/s)")
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_xticks(range(len(runs)), labels, fontsize=7)
    ax.set_ylabel("decode tokens/s, StD over our dense path (×)")
    ax.set_ylim(0, 2.5)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, title="draft (best fixed γ)", title_fontsize=8, loc="upper right")
    fig.suptitle("Built-in model inflated to the Qwen2-VL-7B shape: measured side by side, answers identical to dense",
                 fontsize=9)
    fig.tight_layout()
    save(fig, out)


# --- markdown tables ------------------------------------------------------------------------------------------------


def table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(x) for x in row) + " |" for row in rows]
    return "\n".join(lines)


def f2(x, suffix: str = "") -> str:
    return "–" if x is None else f"{x:.2f}{suffix}"


def ms(seconds) -> str:
    return "–" if seconds is None else f"{seconds * 1e3:.2f}"


def heading(name: str, reports: list[dict], many: bool) -> str:
    return f"**{name}/** ({device_label(reports)})\n\n" if many else ""


def md_environment(reports: list[dict]) -> str:
    rows = []
    for r in reports:
        env, bw = r["environment"], r.get("bandwidth") or {}
        mem = env.get("device_memory_bytes")
        rows.append([
            f"`{r['_dir']}/{r['_path'].name}`", r["kind"], env.get("device_name") or env.get("device"),
            "–" if mem is None else f"{mem / 2**30:.0f} GiB", env.get("torch"), env.get("transformers"),
            env.get("cuda") or "–", env.get("python"), env.get("cpu_threads"), env.get("started"),
            f"{bw['bytes_per_s'] / 1e9:,.1f} GB/s ({bw.get('used')})" if bw.get("bytes_per_s") else "–",
        ])
    text = table(["file", "kind", "device", "device memory", "torch", "transformers", "CUDA", "Python",
                  "CPU threads", "started (UTC)", "measured bandwidth"], rows)
    shapes = {}
    for r in reports:
        if r["kind"] == "random-init":
            shapes.setdefault((r["model"]["family"], r["model"]["scale"], r["model"]["dtype"]), r["model"])
    for (family, scale, dtype), m in shapes.items():
        text += (f"\n\nRandom-init shape {family} {scale} ({dtype}): {m['parameters'] / 1e9:.2f} B parameters, "
                 f"{m['weight_bytes'] / 1e9:.2f} GB of weights, {m['weight_bytes_read_per_step'] / 1e9:.2f} GB read "
                 f"per decode step (no embedding table, no vision tower), {m['layers']} layers, {m['q_heads']} query / "
                 f"{m['kv_heads']} KV heads of {m['head_dim']}, KV cache {m['kv_bytes_per_token']:,} bytes per token.")
    models = {(r["model"].get("name"), r["model"].get("family"), r["model"].get("dtype")) for r in reports
              if r["kind"] == "model"}
    for name, family, dtype in sorted(models, key=str):
        text += f"\n\nModel runs: `{name}` ({family} architecture, {dtype})."
    return text


def md_step_costs(groups: dict[str, dict]) -> str:
    parts = []
    for name, group in groups.items():
        rows = []
        ks = group["reports"][0]["settings"]["k"]
        for (context, batch), p in group["points"].items():
            if p.get("skipped") or not p.get("dense_step"):
                rows.append([context, batch, f"skipped: {p.get('skipped')}", "", "", "", "",
                             f"`{group['files'][context, batch]}`"])
                continue
            dense = p["dense_step"]["s"]
            steps = [("dense", p["dense_step"])]
            steps += [(f"draft K={d['k']} ({d['kept_tokens']} kept)", d) for d in p["draft_steps"] if d["k"] in ks]
            v = verify_at(p, VERIFY_GAMMA)
            if v:
                steps.append((f"verify γ={VERIFY_GAMMA} ({v['tokens']} tokens)", v))
            for label, s in steps:
                rows.append([f"{context:,}", batch, label, ms(s["s"]), ms(s["floor_s"]), f2(s["s"] / s["floor_s"], "×"),
                             f2(s["s"] / dense, "×"), f"`{group['files'][context, batch]}`"])
        parts.append(heading(name, group["reports"], len(groups) > 1)
                     + table(["context", "batch", "step", "ms", "floor ms", "× floor", "× dense step", "file"], rows))
    return "\n\n".join(parts)


def md_verify(groups: dict[str, dict]) -> str:
    parts = []
    for name, group in groups.items():
        points = live(group["points"])
        gammas = sorted({v["gamma"] for p in points.values() for v in p["verify_steps"]})
        rows = []
        for (context, batch), p in points.items():
            by = {v["gamma"]: v["s"] / p["dense_step"]["s"] for v in p["verify_steps"]}
            rows.append([f"{context:,}", batch, ms(p["dense_step"]["s"])] + [f2(by.get(g)) for g in gammas]
                        + [f"`{group['files'][context, batch]}`"])
        parts.append(heading(name, group["reports"], len(groups) > 1)
                     + table(["context", "batch", "dense step ms"] + [f"γ={g}" for g in gammas] + ["file"], rows))
    return "\n\n".join(parts)


def md_projection(groups: dict[str, dict]) -> str:
    parts = []
    for name, group in groups.items():
        index = {(r["context"], r["batch"], r["k"], r["basis"], r["acceptance"]): r for r in group["rows"]}
        keys = sorted({(r["context"], r["batch"], r["k"]) for r in group["rows"]})
        rows = []
        for context, batch, k in keys:
            for basis in ("measured", "floor"):
                cells = []
                for a in PROFILE_ACCEPTANCE:
                    r = index.get((context, batch, k, basis, a))
                    cells.append("–" if r is None else f"{r['speedup']:.2f}× (γ={r['best_gamma']})")
                rows.append([f"{context:,}", batch, k, basis] + cells)
        parts.append(heading(name, group["reports"], len(groups) > 1)
                     + table(["context", "batch", "K", "step costs"] + [f"a = {a}" for a in PROFILE_ACCEPTANCE], rows))
    return "\n\n".join(parts)


def md_builtin(name: str, reports: list[dict], many: bool) -> str:
    configs = model_configs(reports)
    speed, detail = [], []
    for frames, cs in configs.items():
        for c in cs:
            g, d, s = c["generate"], c["dense"], c["std"]
            speed.append([frames, f"{c['prompt_tokens']:.0f}", c["k"], c["gamma"], f2(g["decode_tokens_per_s"]),
                          f2(d["decode_tokens_per_s"]), f2(s["decode_tokens_per_s"]),
                          f2(c["decode_speedup_vs_generate"], "×"), f2(c["decode_speedup_vs_dense"], "×"),
                          f2(c["e2e_speedup_vs_generate"], "×"), f2(c["e2e_speedup_vs_dense"], "×")])
            runs = s["runs"]
            # per-step costs: *_s of a method are means per run, counts are sums over runs
            dense_ms = d["decode_s"] * d["runs"] / d["decoded_tokens"] if d["decoded_tokens"] else None
            draft_ms = s.get("draft_s", 0) * runs / s["drafted"] if s.get("drafted") else None
            verify_ms = s.get("verify_s", 0) * runs / s["cycles"] if s.get("cycles") else None
            acc = (f"{c['acceptance_rate']:.2f} ({s['accepted']}/{s['drafted']})" if c.get("acceptance_rate")
                   is not None else "– (no drafts)")
            by_gamma = s.get("gammas")
            chosen = ("–" if not by_gamma else
                      ", ".join(f"{'dense' if str(g) == '0' else 'γ=' + str(g)}: {n}" for g, n in by_gamma.items()))
            detail.append([frames, c["k"], c["gamma"], chosen,
                           f"{g['new_tokens']:.2f} / {d['new_tokens']:.2f} / {s['new_tokens']:.2f}",
                           s.get("cycles"), s.get("dense_steps"), acc, f2(c.get("mean_accepted_length")),
                           ms(dense_ms), ms(draft_ms), ms(verify_ms),
                           f"{c['identical_to_dense']}/{c['total']}",
                           f"{c['dense_identical_to_generate']}/{c['total']}"])
    text = heading(name, reports, many) + table(
        ["frames", "prompt tokens", "K", "γ", "tok/s generate", "tok/s dense", "tok/s StD", "StD × generate",
         "StD × dense", "e2e StD × generate", "e2e StD × dense"], speed)
    header = ["frames", "K", "γ", "StD steps and cycles by γ"]
    if not any(c["std"].get("gammas") for cs in configs.values() for c in cs):  # runs before the gamma policy
        header, detail = header[:3], [row[:3] + row[4:] for row in detail]
    text += "\n\n" + table(
        header + ["new tokens per answer gen / dense / StD", "StD cycles", "StD dense steps",
         "acceptance (accepted/drafted)", "tokens per cycle", "ms per dense-path token", "ms per draft step",
         "ms per verify", "StD = dense", "dense = generate"], detail)
    return text


def md_time_split(name: str, reports: list[dict], many: bool) -> str:
    inputs: dict = {}
    for r in reports:
        if r["kind"] == "model":
            for i in r["inputs"]:
                inputs.setdefault(i["frames"], []).append(i)
    configs = model_configs(reports)
    mean = lambda xs: sum(xs) / len(xs) if xs else None  # noqa: E731
    rows = []
    for frames, items in sorted(inputs.items(), key=lambda item: (item[0] is None, item[0] or 0)):
        c = (configs.get(frames) or [None])[0]
        prefill = ("–" if c is None else
                   " / ".join(f"{c[m]['prefill_s']:.3f}" for m in ("generate", "dense", "std")))
        rows.append([frames, len(items), f"{mean([i['sampled_frames'] for i in items]):.0f}",
                     f"{mean([i['visual_tokens'] for i in items]):.0f}",
                     f"{mean([i['load_video_s'] for i in items]):.3f}",
                     f"{mean([i['processor_s'] for i in items]):.3f}",
                     f"{mean([i['vision_encoder_s'] for i in items]):.3f}", prefill])
    return heading(name, reports, many) + table(
        ["frames", "inputs", "frames sampled", "visual tokens", "load video s", "processor s", "vision encoder s",
         "prefill s generate / dense / StD (includes the vision encoder)"], rows)


def model_dirs(dirs: dict[str, list[dict]], cpu: bool) -> dict[str, list[dict]]:
    """The built-in model's runs by folder (an inflated model's runs are a 7B-shape measurement, reported apart)."""
    runs = {name: [r for r in rs if r["kind"] == "model" and "inflated" not in r["model"].get("name", "")]
            for name, rs in dirs.items()}
    return {name: rs for name, rs in runs.items()
            if rs and any((r["environment"].get("device") == "cpu") == cpu for r in rs)}


def md_model_section(dirs: dict[str, list[dict]], cpu: bool) -> str | None:
    chosen = model_dirs(dirs, cpu)
    if not chosen:
        return None
    many = len(chosen) > 1
    parts = []
    for name, rs in chosen.items():
        parts.append(md_builtin(name, rs, many))
        parts.append("Where the time of one answer goes before decoding (means over inputs; prefill: means over runs):"
                     "\n\n" + md_time_split(name, rs, False))
    return "\n\n".join(parts)


CPU_PENDING = (
    "No CPU run is committed yet: the CPU figures are produced by `stdcli bench --device cpu --frames 64,256 "
    "--gamma auto,4 --json docs/bench/cpu/builtin_cpu.json`."
)


def update_doc(doc: Path, blocks: dict[str, str]) -> None:
    if not doc.exists():
        print(f"{shown(doc)} does not exist: tables not written")
        return
    text = doc.read_text()
    for name, body in blocks.items():
        begin, end = f"<!-- generated:{name} -->", f"<!-- /generated:{name} -->"
        i, j = text.find(begin), text.find(end)
        if i < 0 or j < i:
            print(f"{shown(doc)}: no {begin} ... {end} markers, table {name!r} not written")
            continue
        text = text[: i + len(begin)] + "\n" + body.strip() + "\n" + text[j:]
    doc.write_text(text)
    print(f"updated the generated tables of {shown(doc)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bench-dir", type=Path, default=ROOT / "docs" / "bench")
    parser.add_argument("--doc", type=Path, default=ROOT / "docs" / "benchmarks.md")
    parser.add_argument("--no-doc", action="store_true", help="only the PNGs; leave docs/benchmarks.md alone")
    args = parser.parse_args()
    reports = load(args.bench_dir)
    if not reports:
        raise SystemExit(f"no {SCHEMA} JSON under {args.bench_dir}/*/")
    dirs = by_dir(reports)
    groups = profiles_7b(reports)
    out = args.bench_dir
    plot_step_costs(groups, out / "step_costs_7b.png")
    plot_projection(groups, out / "projected_speedup_7b.png")
    plot_verify(groups, out / "verify_vs_gamma_7b.png")
    plot_draft_kinds(draft_kind_reports(reports), out / "draft_kinds_7b.png")
    plot_builtin(model_dirs(dirs, cpu=False) | model_dirs(dirs, cpu=True), out / "builtin_tokens_per_s.png")
    plot_inflated(latest_inflated(out), out / "inflated_draft_kinds.png")
    if args.no_doc:
        return
    blocks = {
        "environment": md_environment(reports),
        "step-costs": md_step_costs(groups),
        "verify-gamma": md_verify(groups),
        "projection": md_projection(groups),
        "builtin-gpu": md_model_section(dirs, cpu=False) or "No GPU run of the built-in model is committed.",
        "builtin-cpu": md_model_section(dirs, cpu=True) or CPU_PENDING,
    }
    update_doc(args.doc, blocks)


if __name__ == "__main__":
    main()
