"""The long fuzz run: schemathesis against a real ``lingxi serve``, every route in its OpenAPI document.

    python -m lingxi.evals.fuzz [--max-examples 30] [--seed 0] [--out DIR]

Starts the server on loopback with the newest model in ``$LINGXI_HOME`` (trained first if missing)
and throw-away stores (knowledge base with the demo articles, conversations, events, keys, MLflow
under a temporary home), then runs the schemathesis CLI (examples, coverage and fuzzing phases,
valid and invalid data) with the checks that define "the service keeps its contract": no 5xx
(``not_a_server_error``), documented status codes, documented content types, and bodies that match
the documented schemas. Prints the number of generated requests per phase, the failures, and exits
1 if there were any. ``tests/test_fuzz.py`` is the small in-process version that CI runs.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from lingxi.evals.benchutil import free_port, start_server

CHECKS = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--max-examples", type=int, default=30, help="generated cases per operation and phase")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=2, help="schemathesis client workers")
    ap.add_argument("--out", default="eval-out/fuzz", help="folder for the JSON report and the server log")
    args = ap.parse_args(argv)

    from lingxi.serving.settings import load_settings
    from lingxi.training.bundle import latest_bundle_path

    settings = load_settings()
    if latest_bundle_path(settings.models_path, settings.bot) is None:
        subprocess.run([sys.executable, "-m", "lingxi.serving.cli", "train", "--no-mlflow"], check=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    home = Path(tempfile.mkdtemp(prefix="lingxi-fuzz-"))
    config = home / "lingxi.toml"
    config.write_text(f'home = "{home}"\nmodels_dir = "{settings.models_path.resolve()}"\n', "utf-8")
    port = free_port()
    env = {**os.environ, "LINGXI_RATE_LIMIT_PER_S": "0", "LINGXI_LOG_LEVEL": "WARNING"}
    env.pop("LINGXI_HOME", None)
    proc, base = start_server(["--config", str(config), "serve", "--port", str(port)], env,
                              str(out / "server.log"))
    try:
        cmd = [sys.executable, "-m", "schemathesis.cli", "run", f"{base}/schema/openapi.json",
               "--checks", CHECKS, "--phases", "examples,coverage,fuzzing", "--mode", "all",
               "--max-examples", str(args.max_examples), "--seed", str(args.seed), "-w", str(args.workers),
               "--request-timeout", "60", "--suppress-health-check", "all",
               "--report", "json", "--report-json-path", str(out / "schemathesis.json")]
        print(" ".join(cmd[2:]), flush=True)
        code = subprocess.run(cmd, env=env).returncode
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
    report = json.loads((out / "schemathesis.json").read_text("utf-8"))
    ops, cases = report["operations"], report["test_cases"]
    failures = sum(f["count"] for f in report["failures"])
    errors = sum(e["count"] for e in report["errors"])
    summary = {"operations_tested": ops["tested"], "operations_total": ops["total"],
               "test_cases": cases["generated"], "failures": failures, "errors": errors,
               "failure_kinds": {f["code"]: f["count"] for f in report["failures"]},
               "seed": args.seed, "max_examples": args.max_examples}
    (out / "summary.json").write_text(json.dumps(summary, indent=2), "utf-8")
    print(json.dumps(summary, indent=2))
    return 0 if code == 0 and failures == 0 and errors == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
