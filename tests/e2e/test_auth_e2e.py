"""Authentication as users have it: OAuth renewal, expired tokens, IMS errors, secrets and TLS.

Every test talks to the built-in simulator (served over TLS where TLS is tested) over a real
loopback socket. Time never passes for real: the simulator's token expiry and the token
provider's renewal schedule read :class:`ManualClock` instances that the tests (or request
hooks) move forward, and no test lets a request be retried after a backoff. Command-line runs
happen in this process (the simulator then serves from a thread), except where the command
fails before its first request: those run as ``python -m bulkretry``, so that an HTTP session
left unclosed would show on that process's stderr.
"""

from __future__ import annotations

import asyncio
import os
import ssl
import stat
import subprocess
import sys
import threading
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import orjson
import pytest
from aiohttp import web
from conftest import Certificates

from bulkretry import Credentials, Outcome, RunResult, Settings
from bulkretry._cli.main import main
from bulkretry._cli.options import EXIT_OK, EXIT_STOPPED, EXIT_USAGE
from bulkretry._config import DEFAULT_SCOPES
from bulkretry._engine.attempt import MAX_RENEWALS_PER_RECORD
from bulkretry._engine.engine import Engine
from bulkretry._http.auth import ClientCredentialsToken
from bulkretry._http.tls import session_kwargs
from bulkretry._io.source import InputRecord
from bulkretry._simulator import ManualClock, RecordedRequest, Simulator, SimulatorConfig
from bulkretry._simulator._app import Engine as SimulatorEngine
from bulkretry._simulator._ims import IMS_PATH

pytestmark = pytest.mark.e2e

CLIENT_ID = "e2e-client-id"
#: Characters that URL- and form-encoding change, so that an encoded leak is caught too.
CLIENT_SECRET = "p4ss/W0rd+with&odd=chars~e2e"
ORG_ID = "E2EORG0000000000000000@AdobeOrg"
PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY")


async def no_sleep(seconds: float) -> None:
    """Stand in for asyncio.sleep: backoffs take no time."""


def sim_config(clock: ManualClock | None = None, **overrides: object) -> SimulatorConfig:
    """A simulator that knows the test client; ``clock`` judges token expiry (and wall time)."""
    values: dict[str, object] = {
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "org_id": ORG_ID,
        "flows": 1,
        "runs_per_flow": 10,
    }
    if clock is not None:
        values["clock"] = clock
        values["wall_clock"] = clock
    values.update(overrides)
    return SimulatorConfig(**values)  # type: ignore[arg-type]


def oauth_settings(sim: Simulator, **overrides: object) -> Settings:
    """Settings reaching ``sim`` with OAuth credentials, fast and without backoff waits."""
    values: dict[str, object] = {
        "base_url": sim.base_url,
        "credentials": Credentials(
            api_key=CLIENT_ID,
            org_id=ORG_ID,
            client_id=CLIENT_ID,
            client_secret=CLIENT_SECRET,
            ims_url=sim.ims_url,
        ),
        "rate": 5000.0,
        "burst": 50,
        "concurrency": 16,
        "backoff_base": 0.0,
        "backoff_cap": 0.0,
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


def provider_for(
    sim: Simulator, session: aiohttp.ClientSession, clock: Callable[[], float]
) -> ClientCredentialsToken:
    """The token provider the CLI would build, reading ``clock`` and never sleeping."""
    return ClientCredentialsToken(
        session,
        ims_url=sim.ims_url,
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
        scopes=DEFAULT_SCOPES,
        clock=clock,
        sleep=no_sleep,
    )


async def run_engine(
    settings: Settings,
    run_ids: list[str],
    *,
    session: aiohttp.ClientSession,
    tokens: ClientCredentialsToken,
) -> tuple[list[RunResult], Engine]:
    """Run one batch through the engine with ``tokens``; return its results and the engine."""
    results: list[RunResult] = []

    async def emit(result: RunResult) -> None:
        results.append(result)

    async def batches() -> AsyncIterator[list[InputRecord]]:
        yield [InputRecord("ids.txt", n, run_id, "") for n, run_id in enumerate(run_ids, 1)]

    engine = Engine(settings, session=session, tokens=tokens, wait=no_sleep)
    await engine.run(batches(), emit)
    return results, engine


def bearer(request: RecordedRequest) -> str:
    return request.headers.get("Authorization", "").partition(" ")[2]


def api_requests(sim: Simulator) -> list[RecordedRequest]:
    return [r for r in sim.requests if r.path != IMS_PATH]


def retrigger_requests(sim: Simulator) -> list[RecordedRequest]:
    return [r for r in sim.requests if r.path.endswith("/action")]


@pytest.fixture(autouse=True)
def no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep a proxy in the test runner's environment from intercepting loopback requests."""
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(**session_kwargs()) as s:
        yield s


# -- renewal through the engine --------------------------------------------------------------

#: Seconds each request to the API moves the clock: a binary fraction, so sums stay exact.
STEP = 0.125
#: The simulator's token lifetime; the provider renews a tenth of it before expiry.
LIFETIME = 4
MARGIN = LIFETIME / 10


def advance_on_each_api_request(clock: ManualClock, seconds: float) -> Callable[..., None]:
    """A request hook that moves ``clock`` as each API request arrives, before it is checked."""

    def hook(request: RecordedRequest) -> None:
        if request.path != IMS_PATH:
            clock.advance(seconds)

    return hook


async def test_long_batch_renews_ahead_of_expiry_with_one_ims_request_per_renewal(
    session: aiohttp.ClientSession,
) -> None:
    """Sequentially, tokens are renewed before they expire: no 401, one IMS request each."""
    clock = ManualClock()
    config = sim_config(
        clock,
        runs_per_flow=200,
        token_lifetime=LIFETIME,
        on_request=advance_on_each_api_request(clock, STEP),
    )
    async with Simulator(config) as sim:
        ids = sim.failed_run_ids()
        start = clock()
        results, engine = await run_engine(
            oauth_settings(sim, concurrency=1),
            ids,
            session=session,
            tokens=provider_for(sim, session, clock),
        )
        span = clock() - start
        statuses = Counter(r.status for r in api_requests(sim))
        token_requests = sim.token_requests
        counts = sim.retrigger_counts()
    assert Counter(r.outcome for r in results) == {Outcome.RETRIGGERED: 200}
    assert all(counts[i] == 1 for i in ids)
    assert statuses == {200: 200}  # renewed ahead of time: not a single 401
    assert span == 200 * STEP  # 25 s of token time: six expiries of a 4 s token
    # A token is renewed at the first request at least (LIFETIME - MARGIN) after it was issued:
    # it serves the requests at 0, 0.125 … 3.5 s of its life, 29 of them, so 200 requests need
    # ceil(200 / 29) = 7 tokens: the first one, and one renewal per expiry crossed.
    per_token = int((LIFETIME - MARGIN) / STEP) + 1
    assert token_requests == -(-200 // per_token) == int(span // LIFETIME) + 1
    assert engine.stats.token_renewals == 0  # proactive renewals: no 401 ever asked for one


async def test_concurrent_batch_across_expiries_fails_no_record_and_renews_once_each(
    session: aiohttp.ClientSession,
) -> None:
    """16 workers across six expiries: no record fails, and each renewal asks IMS once."""
    clock = ManualClock()
    config = sim_config(
        clock,
        runs_per_flow=200,
        token_lifetime=LIFETIME,
        on_request=advance_on_each_api_request(clock, STEP),
    )
    async with Simulator(config) as sim:
        ids = sim.failed_run_ids()
        start = clock()
        results, _ = await run_engine(
            oauth_settings(sim, concurrency=16),
            ids,
            session=session,
            tokens=provider_for(sim, session, clock),
        )
        span = clock() - start
        token_requests = sim.token_requests
        refused = [r for r in api_requests(sim) if r.status == 401]
        counts = sim.retrigger_counts()
    assert Counter(r.outcome for r in results) == {Outcome.RETRIGGERED: 200}
    assert all(counts[i] == 1 for i in ids)
    # Each token stops being used once the clock has moved at least LIFETIME - MARGIN since it
    # was issued (ahead of time), or LIFETIME (a 401); a 401 of a token already replaced asks
    # IMS nothing. So at most one token per (LIFETIME - MARGIN) of clock, plus the first one;
    # and no token serves more than LIFETIME, so at least one per LIFETIME crossed.
    assert span >= 200 * STEP  # 401s retried move the clock too
    assert int(span // LIFETIME) <= token_requests <= int(span // (LIFETIME - MARGIN)) + 1
    assert token_requests >= 6
    assert len(refused) <= 16 * token_requests  # only requests in flight at an expiry


async def test_401013_mid_batch_renews_once_for_16_workers_and_retries_them(
    session: aiohttp.ClientSession,
) -> None:
    """A 401 401013 seen by 16 workers at once: one IMS request, all retried, none failed."""
    sim_clock = ManualClock()  # the gateway's idea of time
    own_clock = ManualClock()  # ours: the token still looks fresh to the provider
    arrivals = 0

    def expire_at_request_60(request: RecordedRequest) -> None:
        nonlocal arrivals
        if request.path.endswith("/action"):
            arrivals += 1
            if arrivals == 60:
                sim_clock.advance(3600)

    config = sim_config(
        sim_clock, runs_per_flow=200, token_lifetime=3600, on_request=expire_at_request_60
    )
    async with Simulator(config) as sim:
        ids = sim.failed_run_ids()
        results, engine = await run_engine(
            oauth_settings(sim, concurrency=16),
            ids,
            session=session,
            tokens=provider_for(sim, session, own_clock),
        )
        token_requests = sim.token_requests
        requests = retrigger_requests(sim)
        counts = sim.retrigger_counts()
    refused = [r for r in requests if r.status == 401]
    assert Counter(r.outcome for r in results) == {Outcome.RETRIGGERED: 200}
    assert all(counts[i] == 1 for i in ids)
    assert token_requests == 2  # the first token, and one renewal
    assert len(refused) > 1, "several workers should have seen the 401 at once"
    old = bearer(refused[0])
    assert {bearer(r) for r in refused} == {old}
    for request in refused:
        [retry] = [r for r in requests if r.run_id == request.run_id and r.index > request.index]
        assert retry.status == 200
        assert bearer(retry) not in ("", old)
    assert engine.stats.token_renewals >= 1
    assert engine.halt_reason is None


@pytest.mark.parametrize(
    ("ims_answer", "ims_requests"),
    [pytest.param(401, 1, id="ims-refuses"), pytest.param(503, 3, id="ims-down")],
)
@pytest.mark.parametrize("ending", ["expired-on-our-clock", "refused-by-the-gateway"])
async def test_failed_renewal_asks_ims_once_for_16_workers_and_stops_the_batch(
    session: aiohttp.ClientSession, ending: str, ims_answer: int, ims_requests: int
) -> None:
    """A renewal that IMS refuses (or fails throughout) is shared by 16 workers: one stop."""
    sim_clock = ManualClock()
    # "expired": the provider sees it too and renews in token(); "refused": only the gateway
    # does, and the 401s renew in renew().
    own_clock = sim_clock if ending == "expired-on-our-clock" else ManualClock()
    arrivals = 0

    def hook(request: RecordedRequest) -> int | None:
        nonlocal arrivals
        if request.path == IMS_PATH:
            return ims_answer if arrivals >= 40 else None
        arrivals += 1
        if arrivals == 40:
            sim_clock.advance(3600)
        return None

    config = sim_config(sim_clock, runs_per_flow=200, token_lifetime=3600, on_request=hook)
    async with Simulator(config) as sim:
        results, engine = await run_engine(
            oauth_settings(sim, concurrency=16),
            sim.failed_run_ids(),
            session=session,
            tokens=provider_for(sim, session, own_clock),
        )
        to_ims = [r for r in sim.requests if r.path == IMS_PATH]
    assert len(to_ims) == 1 + ims_requests  # the first token, then one failed renewal
    outcomes = Counter(r.outcome for r in results)
    assert set(outcomes) == {Outcome.RETRIGGERED, Outcome.NOT_ATTEMPTED}
    assert outcomes[Outcome.RETRIGGERED] >= 39 - 16
    assert engine.halt_reason is not None
    assert engine.halt_reason.startswith(
        "IMS refused the token request" if ims_answer == 401 else "could not get an access token"
    )


async def test_api_refusing_the_renewed_token_too_stops_the_batch(
    session: aiohttp.ClientSession,
) -> None:
    """A 401 401013 for a token just renewed means renewing cannot help: the batch stops."""
    to_ims = 0

    def hook(request: RecordedRequest) -> int | None:
        nonlocal to_ims
        if request.path != IMS_PATH:
            return 401
        to_ims += 1
        return 400 if to_ims > 10 else None  # a safety net, ending today's endless renewals

    async with Simulator(sim_config(on_request=hook)) as sim:
        results, engine = await run_engine(
            oauth_settings(sim, concurrency=1),
            sim.failed_run_ids(),
            session=session,
            tokens=provider_for(sim, session, ManualClock()),
        )
    # The first token, then at most MAX_RENEWALS_PER_RECORD renewals for each of the (two, for
    # --concurrency 1) workers that hold a record: a bound, far below the safety net's 10.
    assert to_ims <= 1 + MAX_RENEWALS_PER_RECORD * 2
    assert Counter(r.outcome for r in results) == {Outcome.NOT_ATTEMPTED: 10}
    assert engine.halt_reason is not None
    assert "refused" in engine.halt_reason


# -- the command line, against a simulator served from a thread of its own -------------------


class LoopThread:
    """An event loop in a thread, so that the command under test can run its own loop."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        #: What stops the servers started in the loop, called in reverse order on close.
        self.stops: list[Callable[[], object]] = []

    def run(self, coroutine: object) -> object:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(10)  # type: ignore[arg-type]

    def close(self) -> None:
        for stop in reversed(self.stops):
            self.run(stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture
def loop_thread() -> Iterator[LoopThread]:
    thread = LoopThread()
    try:
        yield thread
    finally:
        thread.close()


@pytest.fixture
def serve(loop_thread: LoopThread) -> Callable[[SimulatorConfig], Simulator]:
    """Start simulators in the loop thread; they stop when the test ends."""

    def start(config: SimulatorConfig) -> Simulator:
        sim = Simulator(config)
        loop_thread.run(sim.start())
        loop_thread.stops.append(sim.stop)
        return sim

    return start


def ids_file(tmp_path: Path, run_ids: list[str]) -> str:
    path = tmp_path / "ids.txt"
    path.write_text("".join(f"{i}\n" for i in run_ids))
    return str(path)


def fast(**variables: str) -> dict[str, str]:
    """The environment of a quick batch: no pacing to speak of, and ``variables``."""
    return {"BULKRETRY_RATE": "5000", "BULKRETRY_BURST": "50", **variables}


def oauth_env(sim: Simulator, **variables: str) -> dict[str, str]:
    """OAuth Server-to-Server against ``sim``, as a user sets it up (API key: the client ID)."""
    env = fast(
        BULKRETRY_BASE_URL=sim.base_url,
        BULKRETRY_IMS_URL=sim.ims_url,
        BULKRETRY_CLIENT_ID=CLIENT_ID,
        BULKRETRY_CLIENT_SECRET=CLIENT_SECRET,
        BULKRETRY_ORG_ID=ORG_ID,
    )
    return {**env, **variables}


def token_env(base_url: str, token: str, **variables: str) -> dict[str, str]:
    """A bearer token given by the user, against ``base_url``."""
    env = fast(
        BULKRETRY_BASE_URL=base_url,
        BULKRETRY_ACCESS_TOKEN=token,
        BULKRETRY_API_KEY=CLIENT_ID,
        BULKRETRY_ORG_ID=ORG_ID,
    )
    return {**env, **variables}


@dataclass
class Ran:
    """What one command left behind: exit code, stdout, stderr and the results file's lines."""

    code: int
    out: str
    err: str
    results: list[dict[str, object]]

    def outcomes(self) -> Counter[object]:
        return Counter(r["outcome"] for r in self.results)

    def stopped_lines(self) -> list[str]:
        return [line for line in self.err.splitlines() if "stopped" in line]


def read_results(path: Path) -> list[dict[str, object]]:
    if not path.exists():
        return []
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def run_cli(
    capfd: pytest.CaptureFixture[str], tmp_path: Path, argv: list[str], env: dict[str, str]
) -> Ran:
    """Run ``bulkretry`` in this process; results go to ``tmp_path/results.jsonl``."""
    results = tmp_path / "results.jsonl"
    if argv[0] == "run":
        argv = [*argv, "-o", str(results), "--overwrite"]
    capfd.readouterr()
    code = main(argv, env)
    out, err = capfd.readouterr()
    return Ran(code, out, err, read_results(results))


def subprocess_env(variables: dict[str, str]) -> dict[str, str]:
    """This process's environment without bulkretry's, TLS or proxy variables, plus ours."""
    kept = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("BULKRETRY_") and k.upper() not in (*PROXY_VARIABLES, "SSL_CERT_FILE")
    }
    return {**kept, **variables}


def run_process(tmp_path: Path, argv: list[str], env: dict[str, str]) -> Ran:
    """Run ``python -m bulkretry`` as a user does; results go to stdout."""
    proc = subprocess.run(
        [sys.executable, "-m", "bulkretry", *argv],
        capture_output=True,
        env=subprocess_env(env),
        timeout=60,
        check=False,
    )
    out = proc.stdout.decode()
    results = [orjson.loads(line) for line in out.splitlines()]
    return Ran(proc.returncode, out, proc.stderr.decode(), results)


def fetch_token(sim: Simulator) -> str:
    """Get a token from the simulator's IMS, as a user would with curl."""
    form = urllib.parse.urlencode(
        {
            "grant_type": "client_credentials",
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
            "scope": DEFAULT_SCOPES,
        }
    ).encode()
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(sim.ims_url, data=form, timeout=10) as response:
        token = orjson.loads(response.read())["access_token"]
    assert isinstance(token, str)
    return token


def expire_at_retrigger(clock: ManualClock, n: int, seconds: float) -> Callable[..., None]:
    """A request hook that moves the gateway's clock ``seconds`` as the n-th re-trigger arrives."""
    arrivals = 0

    def hook(request: RecordedRequest) -> None:
        nonlocal arrivals
        if request.path.endswith("/action"):
            arrivals += 1
            if arrivals == n:
                clock.advance(seconds)

    return hook


# -- a bearer token given by the user ----------------------------------------------------------


def test_expired_static_token_stops_the_batch_saying_so_in_one_line(
    serve: Callable[[SimulatorConfig], Simulator],
    capfd: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    """BULKRETRY_ACCESS_TOKEN expiring mid-batch: exit 3, one line, the rest not_attempted."""
    clock = ManualClock()
    sim = serve(
        sim_config(
            clock,
            runs_per_flow=20,
            token_lifetime=3600,
            on_request=expire_at_retrigger(clock, 6, 3600),
        )
    )
    token = fetch_token(sim)
    env = token_env(sim.base_url, token, BULKRETRY_CONCURRENCY="1")
    ran = run_cli(capfd, tmp_path, ["run", ids_file(tmp_path, sim.failed_run_ids())], env)
    assert ran.code == EXIT_STOPPED
    assert ran.outcomes() == {"retriggered": 5, "not_attempted": 15}
    assert ran.stopped_lines() == [
        "bulkretry: stopped: the access token was refused (401013: expired or invalid); "
        "get a new one and run again"
    ]
    [refused] = [r for r in ran.results if r["http_status"] == 401]
    assert refused["outcome"] == "not_attempted"
    assert refused["error"] == {
        "kind": "http",
        "message": "HTTP 401: Oauth token is not valid",
        "error_code": "401013",
    }
    assert sim.token_requests == 1  # ours: a given token is never renewed
    assert token not in ran.err + ran.out


# -- IMS refusing the client -----------------------------------------------------------------

IMS_REFUSALS = [
    pytest.param(
        {"BULKRETRY_CLIENT_SECRET": "not-the-secret"},
        "HTTP 401 invalid_client: invalid client_secret parameter",
        id="wrong-secret",
    ),
    pytest.param(
        {"BULKRETRY_CLIENT_ID": "someone-else"},
        "HTTP 400 invalid_client: invalid client_id parameter",
        id="unknown-client",
    ),
    pytest.param(
        {"BULKRETRY_SCOPES": "openid,AdobeID,no_such_scope"},
        "HTTP 400 invalid_scope: Invalid scope (no_such_scope)",
        id="unknown-scope",
    ),
]


@pytest.mark.slow
@pytest.mark.parametrize(("change", "refusal"), IMS_REFUSALS)
def test_ims_refusal_stops_the_run_before_any_retrigger(
    serve: Callable[[SimulatorConfig], Simulator],
    tmp_path: Path,
    change: dict[str, str],
    refusal: str,
) -> None:
    """invalid_client/invalid_scope: exit 3, IMS's error in one line, every record not_attempted."""
    sim = serve(sim_config())
    env = oauth_env(sim, **change)
    ids = sim.failed_run_ids()
    ran = run_process(tmp_path, ["run", ids_file(tmp_path, ids)], env)
    assert ran.code == EXIT_STOPPED
    assert ran.err.splitlines()[0] == (
        f"bulkretry: stopped: IMS refused the token request ({refusal})"
    )
    assert "Traceback" not in ran.err
    outcomes = [orjson.loads(line)["outcome"] for line in ran.out.splitlines()]
    assert outcomes == ["not_attempted"] * len(ids)
    assert [r.path for r in sim.requests] == [IMS_PATH]  # a refusal is not retried
    assert CLIENT_SECRET not in ran.err


@pytest.mark.slow
def test_plain_http_ims_url_off_loopback_is_refused_before_any_request(
    serve: Callable[[SimulatorConfig], Simulator], tmp_path: Path
) -> None:
    """BULKRETRY_IMS_URL=http://… to another host: exit 2 naming it; the secret is never sent."""
    sim = serve(sim_config())
    env = oauth_env(sim, BULKRETRY_IMS_URL="http://ims.example.com/ims/token/v3")
    ran = run_process(tmp_path, ["run", ids_file(tmp_path, sim.failed_run_ids())], env)
    assert ran.code == EXIT_USAGE
    assert ran.err.splitlines()[0] == (
        "bulkretry: error: IMS URL 'http://ims.example.com/ims/token/v3' must use https:// "
        "(only loopback addresses may use http://)"
    )
    assert sim.requests == []


@pytest.mark.slow
@pytest.mark.parametrize(
    "change",
    [
        pytest.param({"BULKRETRY_CLIENT_SECRET": "not-the-secret"}, id="ims-refusal"),
        pytest.param({"BULKRETRY_IMS_URL": "http://ims.example.com/ims/token/v3"}, id="http-ims"),
    ],
)
def test_credentials_refused_before_sending_print_exactly_one_line(
    serve: Callable[[SimulatorConfig], Simulator], tmp_path: Path, change: dict[str, str]
) -> None:
    """A run stopped by its credentials says why first, and leaves no unclosed session behind."""
    sim = serve(sim_config())
    ran = run_process(
        tmp_path, ["run", ids_file(tmp_path, sim.failed_run_ids())], oauth_env(sim, **change)
    )
    assert ran.code in (EXIT_USAGE, EXIT_STOPPED)
    lines = ran.err.splitlines()
    assert "IMS" in lines[0]
    # Only the reason, then (for a stop) the summary: no 'Unclosed client session' warnings.
    assert all(line.startswith("bulkretry: ") for line in lines), ran.err
    assert "Unclosed" not in ran.err


# -- --client-secret-file ----------------------------------------------------------------------


def secret_file(tmp_path: Path, mode: int, content: str = CLIENT_SECRET) -> Path:
    path = tmp_path / "client-secret"
    path.write_text(content + "\n")
    path.chmod(mode)
    return path


@pytest.mark.skipif(os.name != "posix", reason="file modes are POSIX")
@pytest.mark.parametrize(("mode", "warned"), [(0o644, True), (0o604, True), (0o600, False)])
def test_client_secret_file_readable_by_others_draws_a_warning(
    serve: Callable[[SimulatorConfig], Simulator],
    capfd: pytest.CaptureFixture[str],
    tmp_path: Path,
    mode: int,
    warned: bool,
) -> None:
    """A secret file others may read warns with its mode and the chmod to run; the run goes on."""
    sim = serve(sim_config())
    path = secret_file(tmp_path, mode)
    env = oauth_env(sim)
    del env["BULKRETRY_CLIENT_SECRET"]
    argv = ["run", ids_file(tmp_path, sim.failed_run_ids()), "--client-secret-file", str(path)]
    ran = run_cli(capfd, tmp_path, argv, env)
    assert ran.code == EXIT_OK
    assert ran.outcomes() == {"retriggered": 10}
    warning = (
        f"bulkretry: client secret file {path} is accessible to other users "
        f"(mode {stat.S_IMODE(mode):04o}); run: chmod 600 {path}"
    )
    assert (warning in ran.err.splitlines()) is warned
    assert ("accessible" in ran.err) is warned
    assert CLIENT_SECRET not in ran.err


def test_missing_client_secret_file_exits_2_naming_the_path(
    serve: Callable[[SimulatorConfig], Simulator],
    capfd: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    """--client-secret-file that does not exist: exit 2, one line naming it, nothing sent."""
    sim = serve(sim_config())
    missing = tmp_path / "no-such-secret"
    argv = ["run", ids_file(tmp_path, sim.failed_run_ids()), "--client-secret-file", str(missing)]
    ran = run_cli(capfd, tmp_path, argv, oauth_env(sim))
    assert ran.code == EXIT_USAGE
    assert ran.err.splitlines() == [
        f"bulkretry: error: client secret file {missing} does not exist"
    ]
    assert sim.requests == []
    assert ran.results == []


# -- TLS ---------------------------------------------------------------------------------------


@dataclass
class TlsSimulator:
    """The simulator's application served over TLS with the test CA's certificate."""

    engine: SimulatorEngine
    base_url: str


@pytest.fixture
def serve_tls(
    loop_thread: LoopThread, certificates: Certificates
) -> Callable[[SimulatorConfig], TlsSimulator]:
    """Start TLS simulators in the loop thread; they stop when the test ends."""
    # A refused handshake is what these tests are about: the server need not log it.
    loop_thread.loop.call_soon_threadsafe(loop_thread.loop.set_exception_handler, lambda *_: None)

    def start(config: SimulatorConfig) -> TlsSimulator:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(certificates.cert, certificates.key)

        async def go() -> tuple[SimulatorEngine, web.AppRunner]:
            engine = SimulatorEngine(config)
            runner = web.AppRunner(engine.application(), access_log=None, shutdown_timeout=1)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context).start()
            return engine, runner

        engine, runner = loop_thread.run(go())  # type: ignore[misc]
        loop_thread.stops.append(runner.cleanup)
        return TlsSimulator(engine, f"https://127.0.0.1:{runner.addresses[0][1]}")

    return start


def test_self_signed_flow_service_is_refused_without_ca_bundle(
    serve_tls: Callable[[SimulatorConfig], TlsSimulator],
    capfd: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    """A certificate the system does not trust: the pre-flight stops the batch with a usage
    error (exit 2) that names --base-url and suggests --ca-bundle, and nothing is sent."""
    sim = serve_tls(sim_config())
    # One attempt a record: today's retries would wait out real backoffs before failing.
    argv = ["run", ids_file(tmp_path, sim.engine.store.failed_run_ids()), "--max-attempts", "1"]
    ran = run_cli(capfd, tmp_path, argv, token_env(sim.base_url, "t"))
    assert ran.code == EXIT_USAGE, ran.err
    [line] = [x for x in ran.err.splitlines() if x.startswith("bulkretry: error:")]
    assert "TLS certificate of 127.0.0.1 could not be verified" in line
    assert "--base-url" in line
    assert "--ca-bundle" in line
    assert ran.outcomes() == {"not_attempted": 10}
    assert sim.engine.count == 0  # the handshake failed: no request reached the server


@pytest.mark.parametrize("how", ["--ca-bundle", "SSL_CERT_FILE"])
def test_self_signed_flow_service_is_accepted_with_its_ca(
    serve_tls: Callable[[SimulatorConfig], TlsSimulator],
    certificates: Certificates,
    capfd: pytest.CaptureFixture[str],
    tmp_path: Path,
    how: str,
) -> None:
    """With the CA given by --ca-bundle or SSL_CERT_FILE, the batch goes through over TLS."""
    sim = serve_tls(sim_config(access_token="tls-static-token"))
    argv = ["run", ids_file(tmp_path, sim.engine.store.failed_run_ids())]
    env = token_env(sim.base_url, "tls-static-token")
    if how == "--ca-bundle":
        argv += ["--ca-bundle", certificates.ca]
    else:
        env["SSL_CERT_FILE"] = certificates.ca
    ran = run_cli(capfd, tmp_path, argv, env)
    assert ran.code == EXIT_OK, ran.err
    assert ran.outcomes() == {"retriggered": 10}
    assert sum(sim.engine.counts.values()) == 10


@pytest.mark.parametrize(
    "url", ["http://platform.adobe.io/data/foundation/flowservice", "http://10.0.0.1:8080"]
)
def test_plain_http_base_url_off_loopback_is_refused(
    capfd: pytest.CaptureFixture[str], tmp_path: Path, url: str
) -> None:
    """An http:// base URL to another host would send the token in clear: exit 2, one line."""
    argv = ["run", ids_file(tmp_path, ["0f5ba2b2-6d1a-4a43-a1c8-0c4a7cde9f11"])]
    ran = run_cli(capfd, tmp_path, argv, token_env(url, "a-token-never-sent"))
    assert ran.code == EXIT_USAGE
    assert ran.err.splitlines() == [
        f"bulkretry: error: base URL {url!r} must use https:// "
        "(only loopback addresses may use http://)"
    ]
    assert ran.results == []


# -- list-failed -------------------------------------------------------------------------------


def test_list_failed_renews_an_expired_oauth_token_once_and_lists_everything(
    serve: Callable[[SimulatorConfig], Simulator],
    capfd: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    """list-failed gets its token from IMS and renews it on a 401 401013 between pages."""
    clock = ManualClock()
    pages = 0

    def expire_before_page_3(request: RecordedRequest) -> None:
        nonlocal pages
        if request.path == "/runs":
            pages += 1
            if pages == 3:
                clock.advance(3601)

    sim = serve(sim_config(clock, token_lifetime=3600, on_request=expire_before_page_3))
    argv = ["list-failed", "--all-flows", "--page-size", "2"]
    ran = run_cli(capfd, tmp_path, argv, oauth_env(sim))
    assert ran.code == EXIT_OK, ran.err
    assert sorted(ran.out.splitlines()) == sorted(sim.failed_run_ids())
    assert sim.token_requests == 2  # the first token, and one renewal
    statuses = [r.status for r in sim.requests if r.path == "/runs"]
    assert statuses == [200, 200, 401, 200, 200, 200]
    assert "1 token renewals" in ran.err
    assert CLIENT_SECRET not in ran.out + ran.err


# -- no secret in any output -------------------------------------------------------------------


@dataclass
class Leftovers:
    """Everything a batch left for people and machines to read, and the secrets it knew."""

    ran: Ran
    files: list[Path]
    secrets: set[str]


def secret_forms(secret: str) -> set[str]:
    """The secret as sent or logged: raw, URL- and form-encoded, and each part of a JWT."""
    forms = {secret, urllib.parse.quote(secret, safe=""), urllib.parse.quote_plus(secret)}
    forms.update(part for part in secret.split(".")[1:] if len(part) >= 16)
    return forms


def tokens_seen(requests: list[RecordedRequest]) -> set[str]:
    return {bearer(r) for r in requests} - {""}


def every_6th_retrigger_refused_then_ims_refuses() -> Callable[..., object]:
    """401 for every 6th re-trigger (a renewal each); from the 30th on, IMS refuses too."""
    arrivals = 0

    def hook(request: RecordedRequest) -> object:
        nonlocal arrivals
        if request.path == IMS_PATH:
            return 401 if arrivals >= 30 else None
        arrivals += 1
        return 401 if arrivals % 6 == 0 else None

    return hook


def oauth_batch_failing_many_ways(
    serve: Callable[[SimulatorConfig], Simulator],
    capfd: pytest.CaptureFixture[str],
    tmp_path: Path,
    flags: list[str],
) -> Leftovers:
    """OAuth from a secret file; 5xx, resets, 401s and renewals, until IMS refuses: exit 3."""
    config = sim_config(
        runs_per_flow=60,
        seed=5,
        error_rate=0.15,
        reset_rate=0.1,
        on_request=every_6th_retrigger_refused_then_ims_refuses(),
    )
    sim = serve(config)
    env = oauth_env(sim, BULKRETRY_CONCURRENCY="4")
    del env["BULKRETRY_CLIENT_SECRET"]
    path = secret_file(tmp_path, 0o644)
    argv = ["run", ids_file(tmp_path, sim.failed_run_ids()), "--client-secret-file", str(path)]
    # One attempt a record: retries would wait out real backoffs (a 401 is still renewed).
    ran = run_cli(capfd, tmp_path, [*argv, "--max-attempts", "1", *flags], env)
    assert ran.code == EXIT_STOPPED
    outcomes = ran.outcomes()
    assert outcomes["retriggered"]
    assert outcomes["not_attempted"]
    assert outcomes["in_doubt"] + outcomes["failed"]
    assert sim.token_requests >= 3  # renewals, then the one IMS refused
    assert sim.stats[401] >= 3
    assert sim.stats["reset"]
    assert sim.stats[500] + sim.stats[502] + sim.stats[503] + sim.stats[504]
    assert any("IMS refused the token request" in line for line in ran.stopped_lines())
    secrets = {CLIENT_SECRET, path.read_text().strip(), *tokens_seen(sim.requests)}
    return Leftovers(ran, [tmp_path / "results.jsonl"], secrets)


def static_token_expiring(
    serve: Callable[[SimulatorConfig], Simulator],
    capfd: pytest.CaptureFixture[str],
    tmp_path: Path,
    flags: list[str],
) -> Leftovers:
    """A --token-file token expiring mid-batch: exit 3."""
    clock = ManualClock()
    hook = expire_at_retrigger(clock, 8, 3600)
    sim = serve(sim_config(clock, runs_per_flow=30, token_lifetime=3600, on_request=hook))
    token = fetch_token(sim)
    path = tmp_path / "token"
    path.write_text(token + "\n")
    path.chmod(0o600)
    env = token_env(sim.base_url, "unused", BULKRETRY_CONCURRENCY="4")
    del env["BULKRETRY_ACCESS_TOKEN"]
    argv = ["run", ids_file(tmp_path, sim.failed_run_ids()), "--token-file", str(path)]
    ran = run_cli(capfd, tmp_path, [*argv, *flags], env)
    assert ran.code == EXIT_STOPPED
    assert ran.outcomes()["not_attempted"]
    return Leftovers(ran, [tmp_path / "results.jsonl"], {token, CLIENT_SECRET})


def ims_refusing_the_secret_file(
    serve: Callable[[SimulatorConfig], Simulator],
    capfd: pytest.CaptureFixture[str],
    tmp_path: Path,
    flags: list[str],
) -> Leftovers:
    """A secret file holding a wrong secret, in a subprocess: IMS says invalid_client."""
    sim = serve(sim_config())
    wrong = "wr0ng/s3cret+from&file=" + "x" * 8
    path = secret_file(tmp_path, 0o600, wrong)
    env = oauth_env(sim)
    del env["BULKRETRY_CLIENT_SECRET"]
    argv = ["run", ids_file(tmp_path, sim.failed_run_ids()), "--client-secret-file", str(path)]
    ran = run_process(tmp_path, [*argv, *flags], env)
    assert ran.code == EXIT_STOPPED
    assert "invalid_client" in ran.err
    return Leftovers(ran, [], {wrong, CLIENT_SECRET})


def tls_refused(
    serve_tls: Callable[[SimulatorConfig], TlsSimulator],
    capfd: pytest.CaptureFixture[str],
    tmp_path: Path,
    flags: list[str],
) -> Leftovers:
    """A static token sent to a server whose certificate does not verify."""
    token = "tls-static-token-" + "s3cr3t" * 4
    sim = serve_tls(sim_config(access_token=token))
    argv = ["run", ids_file(tmp_path, sim.engine.store.failed_run_ids()), "--max-attempts", "1"]
    ran = run_cli(capfd, tmp_path, [*argv, *flags], token_env(sim.base_url, token))
    assert ran.code == EXIT_USAGE  # the pre-flight found it
    assert "could not be verified" in ran.err
    return Leftovers(ran, [tmp_path / "results.jsonl"], {token})


@pytest.mark.parametrize("log_format", ["text", "json"])
@pytest.mark.parametrize(
    "scenario",
    [
        pytest.param(oauth_batch_failing_many_ways, id="oauth-5xx-resets-401s-ims-refusal"),
        pytest.param(static_token_expiring, id="static-token-expiring"),
        pytest.param(ims_refusing_the_secret_file, id="ims-invalid-client", marks=pytest.mark.slow),
        pytest.param(tls_refused, id="tls-refused"),
    ],
)
def test_failing_batch_leaves_no_secret_in_any_output(
    request: pytest.FixtureRequest,
    capfd: pytest.CaptureFixture[str],
    tmp_path: Path,
    scenario: Callable[..., Leftovers],
    log_format: str,
) -> None:
    """stdout, stderr (-v logs), the results file and the state file hold no token or secret."""
    state = tmp_path / "batch.state"
    flags = ["-v", "--log-format", log_format, "--state", str(state)]
    server = request.getfixturevalue("serve_tls" if scenario is tls_refused else "serve")
    left = scenario(server, capfd, tmp_path, flags)
    ran = left.ran
    assert "Traceback" not in ran.err
    assert ran.err.strip(), "a failing batch says why on stderr"
    texts: dict[str, bytes] = {"stdout": ran.out.encode(), "stderr": ran.err.encode()}
    if log_format == "json":
        logs = [orjson.loads(line) for line in ran.err.splitlines() if line.startswith("{")]
        # main() prints a refusal caught before the batch (or by its pre-flight) as plain text,
        # not as a JSON log.
        assert logs or scenario in (ims_refusing_the_secret_file, tls_refused)
        texts["json log messages"] = "\n".join(
            str(log.get("message", log)) for log in logs
        ).encode()
    files = [*left.files, *(state.with_name(state.name + s) for s in ("", "-wal", "-shm"))]
    assert state.exists()
    for path in files:
        if path.exists():
            texts[path.name] = path.read_bytes()
    assert left.secrets
    for where, text in texts.items():
        for secret in left.secrets:
            for form in secret_forms(secret):
                assert form.encode() not in text, f"a secret ({form[:4]}…) is in {where}"
