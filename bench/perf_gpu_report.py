"""gpu.md from gpu.json (bench.perf_gpu): one markdown table per section, so that a GPU session's
evidence can be pasted into docs and issues as it came out."""

from __future__ import annotations

from typing import Any


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1e-2 or abs(value) >= 1e4 else f"{value:.3f}"
    if isinstance(value, list):
        return "; ".join(str(v) for v in value) or "none"
    return str(value).replace("|", "/").replace("\n", " ")


def table(rows: list[dict[str, Any]], columns: list[tuple[str, str]]) -> str:
    head = "| " + " | ".join(label for _, label in columns) + " |"
    rule = "|" + "---|" * len(columns)
    body = ["| " + " | ".join(_cell(r.get(key)) for key, _ in columns) + " |" for r in rows]
    return "\n".join([head, rule, *body])


def _block(
    result: dict[str, Any], name: str, heading: str, columns: list[tuple[str, str]]
) -> list[str]:
    """A section's heading and table; a section that did not run is a dict with its status."""
    value = result.get(name)
    body = table(value, columns) if isinstance(value, list) else str((value or {}).get("status"))
    return [f"## {heading}", "", body, ""]


def markdown(result: dict[str, Any]) -> str:
    m = result["machine"]
    lines = [
        "# bench GPU evidence", "",
        f"`{result['command']}`: device {result['device']}"
        + (f" ({result['substitution']})" if result.get("substitution") else "")
        + f", stacks of {result['sizes']}, {result['seconds']:.0f} s of a "
        f"{result['budget_s']:.0f} s budget.", "",
        f"GPU {m.get('gpu_name') or 'none'}, driver {m.get('driver_version')}, CUDA "
        f"{m.get('cuda_version')}, cuDNN {m.get('cudnn_version')}, torch {m.get('torch_version')}, "
        f"Python {m.get('python_version')}, CPU {m.get('cpu_model')} ({m.get('cpu_count')} cores).",
        "",
    ]  # fmt: skip
    lines += _block(result, "determinism", "Determinism", [
        ("library", "library"), ("model", "model"), ("device", "device"),
        ("setting", "setting"), ("status", "status"), ("runs", "runs"),
        ("distinct_weights", "distinct weight hashes"),
        ("distinct_predictions", "distinct prediction hashes"),
        ("nondeterministic_ops", "non-deterministic ops"),
        ("fit_seconds_median", "fit s (median)"),
        ("fit_time_ratio_det_to_default", "fit time det / PyTorch defaults"),
        ("fit_time_ratio_det_to_autotune", "fit time det / autotuning"),
    ])  # fmt: skip
    lines += _block(result, "hardware", "CPU vs GPU (same spec, deterministic mode on)", [
        ("library", "library"), ("model", "model"), ("devices", "devices"),
        ("status", "status"), ("errors", "errors"), ("bitwise_equal", "bitwise equal"),
        ("max_weight_diff", "largest weight difference"), ("churn", "churn"),
        ("accuracy_diff", "accuracy difference (GPU - CPU)"),
    ])  # fmt: skip
    lines += _block(result, "throughput", "Stacked throughput (30-64-64 MLP, breast_cancer)", [
        ("size", "members"), ("variant", "variant"), ("status", "status"),
        ("models_per_s", "models/s"), ("compile_seconds", "compile s"),
        ("host_share", "host share"), ("host_share_raw", "host share, unclipped"),
        ("host_share_note", "host share: how"),
    ])  # fmt: skip
    tests = result.get("gpu_tests", {})
    lines += ["## gpu-marked tests", ""]
    counts = ", ".join(f"{k} {tests[k]}" for k in ("passed", "failed", "errors", "skipped")
                       if k in tests)  # fmt: skip
    absent = ", ".join(tests.get("absent_here") or []) or "nothing"
    lines += [f"{tests.get('status')}: {counts or 'no counts'}; absent here: {absent}.", ""]
    if tests.get("tests"):
        lines += [table(tests["tests"], [("test", "test"), ("outcome", "outcome"),
                                         ("reason", "reason")]), ""]  # fmt: skip
    return "\n".join(lines)
