"""``bulkretry demo``: a whole recovery against the built-in simulator, checked at the end.

The simulator is seeded with a few thousand failed runs across several flows and given the
trouble a real recovery meets: a quota below the rate bulkretry is allowed, a few percent of
503 answers, and latency. The real ``run`` pipeline then re-triggers every run, and the demo
checks against the simulator's own records that each was re-triggered exactly once. The 503s
say "not processed", so bulkretry retries them; a 500, 502 or 504 may hide a processed
re-trigger, which bulkretry holds ``in_doubt`` by default rather than risk a second one.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import math
import os
import shlex
import sys
import tempfile
from collections import Counter

import orjson

from .._config import Credentials, Settings
from .._exceptions import ConfigurationError
from .._io.source import RecordReader, RunIdValidator
from .._io.written import open_output
from .._simulator import Simulator, SimulatorConfig, TokenBucketQuota
from .batch_input import read_batches
from .loop import new_event_loop
from .run import BatchRunner

__all__ = ["run_demo"]

FLOWS = 6
#: The simulated gateway's quota; bulkretry is allowed more and must find this by itself.
QUOTA_RATE = 250.0
QUOTA_BURST = 20
DEMO_RATE = 400.0
DEMO_CONCURRENCY = 32


def run_demo(ns: argparse.Namespace) -> int:
    """Run the demo; return 0 when every run was re-triggered exactly once."""
    if not ns.overwrite and os.path.exists(ns.output) and os.path.getsize(ns.output) > 0:
        raise ConfigurationError(
            f"{ns.output} exists (results of an earlier demo?); use --overwrite or another -o"
        )
    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        return runner.run(_demo(ns.runs, ns.output))


async def _demo(runs: int, output: str) -> int:
    config = SimulatorConfig(
        flows=FLOWS,
        runs_per_flow=math.ceil(runs / FLOWS),
        quota=TokenBucketQuota(rate=QUOTA_RATE, burst=QUOTA_BURST),
        error_rate=0.03,
        error_statuses=(503,),
        latency=0.02,
        jitter=0.03,
        seed=2026,
        record_requests=False,
    )
    async with Simulator(config) as sim:
        ids = sim.failed_run_ids()[:runs]
        print(
            f"demo: simulator on {sim.base_url} with {len(ids)} failed runs in {FLOWS} flows, "
            f"a quota of {QUOTA_RATE:g} requests/s, 3% 503 answers and 20-50 ms latency",
            file=sys.stderr,
        )
        with tempfile.NamedTemporaryFile("w", prefix="bulkretry-demo-", suffix=".ids") as listing:
            listing.write("\n".join(ids) + "\n")
            listing.flush()
            settings = Settings(
                base_url=sim.base_url,
                credentials=Credentials(
                    access_token=config.access_token,
                    api_key=config.api_key,
                    org_id=config.org_id,
                    sandbox=config.sandbox,
                ),
                rate=DEMO_RATE,
                concurrency=DEMO_CONCURRENCY,
                backoff_base=0.25,
            )
            same = shlex.join(
                [
                    "bulkretry", "run", "--rate", f"{DEMO_RATE:g}", "--concurrency",
                    str(DEMO_CONCURRENCY), "--state", "demo.db", "-o", output,
                ]
            )  # fmt: skip
            print(
                "demo: the same pipeline on your sandbox (credentials in BULKRETRY_*): "
                f"bulkretry list-failed --all-flows --since 1d | {same}",
                file=sys.stderr,
            )
            fd = open_output(output, append=False, overwrite=True, inputs=[listing.name])
            try:
                reader = RecordReader([listing.name], RunIdValidator())
                batches = functools.partial(read_batches, reader)
                code = await BatchRunner(settings, batches, fd).main()
            finally:
                os.close(fd)
        counts = sim.retrigger_counts()
    return _verdict(ids, counts, output, code)


def _verdict(ids: list[str], counts: dict[str, int], output: str, code: int) -> int:
    with open(output, "rb") as fh:
        outcomes = Counter(orjson.loads(line)["outcome"] for line in fh)
    once = sum(1 for run_id in ids if counts.get(run_id, 0) == 1)
    twice = sum(1 for run_id in ids if counts.get(run_id, 0) > 1)
    if once == len(ids) and outcomes["retriggered"] == len(ids) and code == 0:
        print(
            f"demo: all {len(ids)} runs were re-triggered exactly once, as the simulator's own "
            f"records confirm; results in {output}",
            file=sys.stderr,
        )
        return 0
    print(
        f"demo: FAILED: {once} of {len(ids)} runs re-triggered once, {twice} more than once, "
        f"outcomes {dict(outcomes)}; results in {output}",
        file=sys.stderr,
    )
    return 1
