"""`tokenforge demo`: the main job end to end on the bundled real data, for every landed method.

    tokenforge demo [--out outputs/demo] [--methods vqgan,gpt,...] [--steps small|default] [--device cuda --preset small]

Bundled samples (``tokenforge/samples``: photos, labelled face crops, 24 kHz speech, meshes; sources and
licences in its ATTRIBUTION.md) -> raw shards -> fit the tiny config of every tokenizer (vqgan, tokenflow,
flextok, klvae on photos; wavtokenizer on speech; vat on meshes) -> reconstruct held-out files with each
method's command -> evaluate on the validation shards -> encode the faces into VQGAN token shards and KL
latent shards -> fit the generators (gpt, enat on tokens; ecar on latents; linfusion distillation on photos)
-> sample and decode -> ``summary.json``, ``results.md`` and the HTML report ``index.html``.
Each stage prints one line; a failed stage is reported and the stages that do not need it still run.
"""

from __future__ import annotations

import argparse
import json
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tokenforge.demo_baselines import baseline_stage
from tokenforge.demo_claims import claim_stage
from tokenforge.demo_generators import linfusion, token_generator
from tokenforge.demo_stages import Run, encode, image_tokenizer, make_data, vat, wavtokenizer
from tokenforge.report import write_report

MODALITY = {"vqgan": "image", "tokenflow": "image", "flextok": "image", "klvae": "image", "wavtokenizer": "audio",
            "vat": "mesh", "gpt": "image tokens", "enat": "image tokens", "ecar": "image latents",
            "linfusion": "text-to-image"}
METHODS = tuple(MODALITY)

# optimiser steps per method: "default" fits 2 idle CPU cores in ~10 minutes, "small" is a smoke test,
# "long" is for --device cuda --preset small (not timed here).
STEPS: dict[str, dict[str, int]] = {
    "small": {m: 3 for m in METHODS},
    "default": {"vqgan": 400, "tokenflow": 300, "flextok": 400, "klvae": 300, "wavtokenizer": 100, "vat": 500,
                "gpt": 80, "enat": 300, "ecar": 300, "linfusion": 100},
    "long": {"vqgan": 2000, "tokenflow": 2000, "flextok": 2000, "klvae": 2000, "wavtokenizer": 1000, "vat": 2000,
             "gpt": 3000, "enat": 3000, "ecar": 3000, "linfusion": 1000},
}


def plan(methods: list[str]) -> list[tuple[str, Callable[[Run], Any], tuple[str, ...]]]:
    """The stages for ``methods`` plus the data and encode stages they need, in run order."""
    wanted = set(methods)
    needs_vq = wanted & {"vqgan", "gpt", "enat"}
    needs_kl = wanted & {"klvae", "ecar"}
    stages: list[tuple[str, Callable[[Run], Any], tuple[str, ...]]] = []
    data = []
    if wanted & {"vqgan", "tokenflow", "flextok", "klvae", "linfusion"} or needs_vq or needs_kl:
        data.append("photos")
    if wanted & {"gpt", "enat", "ecar"}:
        data.append("faces")
    if "wavtokenizer" in wanted:
        data.append("speech")
    if "vat" in wanted:
        data.append("meshes")
    for kind in data:
        stages.append((f"data/{kind}", lambda run, kind=kind: make_data(run, kind), ()))
    for method, size in (("vqgan", 32), ("tokenflow", 32), ("flextok", 16), ("klvae", 32)):
        if method in wanted or (method == "vqgan" and needs_vq) or (method == "klvae" and needs_kl):
            stages += image_tokenizer(method, size)
    if "wavtokenizer" in wanted:
        stages += wavtokenizer()
    if "vat" in wanted:
        stages += vat()
    if wanted & {"gpt", "enat"}:
        stages.append(("encode/vqgan", encode("vqgan", "faces_vqgan", 32), ("vqgan/fit", "data/faces")))
    if "ecar" in wanted:  # tiny E-CAR's last scale is 8x8: 16 px faces through the x2 KL autoencoder
        stages.append(("encode/klvae", encode("klvae", "faces_klvae", 16, latents=True), ("klvae/fit", "data/faces")))
    for method, tokens in (("gpt", "encode/vqgan"), ("enat", "encode/vqgan"), ("ecar", "encode/klvae")):
        if method in wanted:
            stages += token_generator(method, tokens)
    if "linfusion" in wanted:
        stages += linfusion()
    for method in METHODS:  # every method's trivial baseline and paper claim, after its own stages
        if method in wanted:
            stages += baseline_stage(method) + claim_stage(method)
    return stages


class Stages:
    """Runs named stages, prints a line per stage, records results and failures for summary.json."""

    def __init__(self, run: Run) -> None:
        self.run_state = run
        self.report: dict[str, Any] = run.results

    def run(self, name: str, fn: Callable[[Run], Any], needs: tuple[str, ...] = ()) -> Any:
        missing = [n for n in needs if self.report.get(n, {}).get("status") != "ok"]
        if missing:
            self.report[name] = {"status": "skipped", "reason": f"needs {', '.join(missing)}"}
            print(f"[demo] {name:<22} skipped (needs {', '.join(missing)})", flush=True)
            return None
        print(f"[demo] {name:<22} ...", flush=True)
        start = time.perf_counter()
        try:
            result = fn(self.run_state)
        except Exception as error:  # report and go on: later stages that can run still run
            traceback.print_exc()
            self.report[name] = {"status": "failed", "error": f"{type(error).__name__}: {error}",
                                 "seconds": round(time.perf_counter() - start, 1)}
            print(f"[demo] {name:<22} FAILED: {error}", flush=True)
            return None
        seconds = time.perf_counter() - start
        self.report[name] = {"status": "ok", "seconds": round(seconds, 1), **(result or {})}
        shown = {k: v for k, v in (result or {}).items()
                 if k in ("metrics", "splits", "rejected", "steps", "unigram_entropy_nats", "codes_used")}
        print(f"[demo] {name:<22} ok in {seconds:.1f} s {json.dumps(shown)}", flush=True)
        return result


def metric_rows(summary: dict[str, Any], method: str) -> list[tuple[str, str, float, float | None]]:
    """(stage, metric, model value, trivial-baseline value or None) for every quality number of ``method``."""
    baseline = (summary["stages"].get(f"{method}/baseline") or {}).get("metrics") or {}
    rows = []
    for stage in ("evaluate", "reconstruct", "generate"):
        result = summary["stages"].get(f"{method}/{stage}", {})
        for key, value in (result.get("metrics") or {}).items():
            # the baseline is scored with evaluate's protocol (LinFusion: its generate stage's), so it sits
            # beside those numbers only
            same = stage == "evaluate" or (stage == "generate" and method == "linfusion")
            rows.append((stage, key, value, baseline.get(key) if same else None))
    return rows


def _cell(value: Any) -> str:
    return f"{value:g}" if isinstance(value, (int, float)) else ("" if value is None else str(value))


def results_table(summary: dict[str, Any]) -> str:
    """Markdown: each method's held-out numbers beside a trivial baseline's, then each paper claim as measured."""
    lines = [f"Produced by `{summary['command']}` ({summary['device']}, steps={summary['steps_preset']}, "
             f"wall time {summary['wall_seconds']:.0f} s). Tiny configs after seconds of CPU training: the numbers "
             "show that each chain works end to end, not what the method reaches; they vary slightly across CPUs.",
             "", "| method | modality | metric | model | trivial baseline |", "|---|---|---|---|---|"]
    for method in summary["methods"]:
        rows = metric_rows(summary, method)
        name = (summary["stages"].get(f"{method}/baseline") or {}).get("baseline", "")
        for stage, key, value, base in rows:
            shown = f"{_cell(base)} ({name})" if base is not None else ""
            lines.append(f"| {method} | {MODALITY[method]} | {stage}: {key} | {_cell(value)} | {shown} |")
        if not rows:
            statuses = {k: v["status"] for k, v in summary["stages"].items() if k.startswith(method + "/")}
            lines.append(f"| {method} | {MODALITY[method]} | status | {statuses or 'not run'} | |")
    claims = [(m, summary["stages"][f"{m}/claim"]) for m in summary["methods"] if f"{m}/claim" in summary["stages"]]
    if claims:
        lines += ["", "Paper claims, measured on this machine (ratios matter; absolute times depend on the CPU):", "",
                  "| method | claim | measured here |", "|---|---|---|"]
        for method, result in claims:
            seen = result.get("verdict") if result["status"] == "ok" else f"{result['status']}: " + str(
                result.get("error") or result.get("reason"))
            lines.append(f"| {method} | {result.get('claim', CLAIM_TITLES.get(method, ''))} | {seen} |")
    return "\n".join(lines) + "\n"


CLAIM_TITLES = {"linfusion": "time and memory vs resolution, softmax vs linear attention",
                "enat": "reuse vs no reuse", "ecar": "FLOPs and time vs DiT", "flextok": "PSNR vs number of tokens",
                "vat": "F-score vs bytes per scale", "wavtokenizer": "tokens per second and mel distance"}


def selector(only: str | None, out: Path, run: Run) -> Callable[[str], bool]:
    """Which stages to run: all, or with ``only`` the named stages / prefixes, the others' results being read
    back from ``out/summary.json`` (a stage absent there stays absent, so stages that need it are skipped)."""
    if not only:
        return lambda name: True
    previous = out / "summary.json"
    if previous.is_file():
        run.results.update(json.loads(previous.read_text()).get("stages", {}))
    wanted = [w.strip().rstrip("/") for w in only.split(",") if w.strip()]
    return lambda name: any(name == w or name.startswith(w + "/") for w in wanted)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tokenforge demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("outputs/demo"), help="output folder (outputs/demo)")
    parser.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated subset of {','.join(METHODS)}")
    parser.add_argument("--steps", choices=tuple(STEPS), default=None,
                        help="step table: small (smoke test), default (CPU, ~10 min), long (GPU; default with --preset small)")
    parser.add_argument("--preset", choices=("tiny", "small"), default="tiny",
                        help="config size: tiny (CPU) or small (configs' small.yaml where it exists, GPU)")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1: tiny models gain little more)")
    parser.add_argument("--no-report", action="store_true", help="skip index.html")
    parser.add_argument("--only", default=None,
                        help="comma-separated stages or stage prefixes to (re)run, e.g. 'vat/claim,flextok'; the "
                             "other stages keep their results from the summary.json already in --out")
    args = parser.parse_args(argv)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        parser.error(f"unknown method(s) {', '.join(unknown)}; choose from {', '.join(METHODS)}")
    steps_name = args.steps or ("long" if args.preset == "small" else "default")

    import torch

    if args.device == "cpu":  # tiny models: more threads than free cores make them many times slower
        torch.set_num_threads(args.threads)
    started = time.perf_counter()
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    run = Run(out=out, device=args.device, steps=STEPS[steps_name], preset=args.preset)
    stages = Stages(run)
    selected = selector(args.only, out, run)
    for name, fn, needs in plan(methods):
        if selected(name):
            stages.run(name, fn, needs)
    wall = time.perf_counter() - started
    summary = {"command": "tokenforge demo " + " ".join(argv if argv is not None else []),
               "device": args.device, "preset": args.preset, "steps_preset": steps_name, "steps": STEPS[steps_name],
               "methods": methods, "modalities": {m: MODALITY[m] for m in methods},  # the report's headings
               "wall_seconds": round(wall, 1), "stages": run.results}
    summary["command"] = summary["command"].strip()
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    (out / "results.md").write_text(results_table(summary))
    if not args.no_report:
        page = write_report(out)
        print(f"[demo] report: {page}")
    failed = [name for name, r in run.results.items() if r["status"] != "ok"]
    print(f"[demo] {len(run.results)} stages in {wall:.0f} s; wrote {out / 'summary.json'}, {out / 'results.md'}"
          + (f"; not ok: {', '.join(failed)}" if failed else "; all ok"), flush=True)
    return 1 if failed else 0

