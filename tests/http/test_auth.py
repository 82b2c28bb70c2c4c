"""Tests of bulkretry._http.auth: static tokens and OAuth Server-to-Server tokens from IMS."""

from __future__ import annotations

import asyncio
import errno
import itertools
import random
import traceback
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import orjson
import pytest
from aiohttp import web
from aiohttp.client_middlewares import ClientHandlerType

from bulkretry._config import DEFAULT_SCOPES, Credentials
from bulkretry._exceptions import (
    AuthenticationError,
    ConfigurationError,
    MissingCredentialsError,
)
from bulkretry._http.auth import ClientCredentialsToken, StaticToken, TokenProvider, token_provider

SECRET = "p8e-TOP-SECRET-client-secret-value"
#: What a hostile server writes to clear the screen and ring the bell.
HOSTILE = "\x1b[2J\x07"
CLIENT_ID = "my-client-id"
DAY = 86399


@dataclass(frozen=True)
class Reply:
    status: int
    body: bytes
    started: asyncio.Event | None
    release: asyncio.Event | None
    headers: dict[str, str] | None = None


class FakeIMS:
    """A scripted IMS on a loopback socket, plus a client middleware for network failures.

    aioresponses cannot build responses for aiohttp 3.14 (pnuckowski/aioresponses#289), so
    answers come from a real server; failures below HTTP are raised by the middleware, which
    needs no real waiting.
    """

    def __init__(self) -> None:
        self.url = ""
        self.forms: list[dict[str, str]] = []
        self.requests = 0
        self._script: deque[Reply | BaseException] = deque()
        self._pending: dict[str, Reply] = {}
        self._ids = itertools.count()

    def reply(
        self,
        payload: object = None,
        *,
        status: int = 200,
        body: bytes | None = None,
        times: int = 1,
        started: asyncio.Event | None = None,
        release: asyncio.Event | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        """Script the next answers: JSON ``payload`` or raw ``body``, optionally held."""
        raw = orjson.dumps(payload) if body is None else body
        self._script.extend([Reply(status, raw, started, release, headers)] * times)

    def fail(self, error: BaseException, *, times: int = 1) -> None:
        """Script the next attempts to fail below HTTP with ``error``."""
        self._script.extend([error] * times)

    async def middleware(
        self, request: aiohttp.ClientRequest, handler: ClientHandlerType
    ) -> aiohttp.ClientResponse:
        self.requests += 1
        step = self._script.popleft() if self._script else Reply(599, b"unscripted", None, None)
        if isinstance(step, BaseException):
            raise step
        key = str(next(self._ids))
        self._pending[key] = step
        request.headers["X-Fake-Step"] = key
        return await handler(request)

    async def handle(self, request: web.Request) -> web.Response:
        form = await request.post()
        self.forms.append({name: str(value) for name, value in form.items()})
        step = self._pending.pop(request.headers["X-Fake-Step"])
        if step.started is not None:
            step.started.set()
        if step.release is not None:
            await step.release.wait()
        return web.Response(
            status=step.status,
            body=step.body,
            content_type="application/json",
            headers=step.headers,
        )


@pytest.fixture
async def ims() -> AsyncIterator[FakeIMS]:
    fake = FakeIMS()
    app = web.Application()
    app.router.add_post("/ims/token/v3", fake.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        fake.url = f"http://{host}:{port}/ims/token/v3"
        yield fake
    finally:
        await runner.cleanup()


@pytest.fixture
async def session(ims: FakeIMS) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(middlewares=(ims.middleware,)) as session:
        yield session


class FakeClock:
    """A monotonic clock that moves only when the test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class FakeSleep:
    """Records the waits asked for and returns at once."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def sleep() -> FakeSleep:
    return FakeSleep()


@pytest.fixture
def provider(
    session: aiohttp.ClientSession, ims: FakeIMS, clock: FakeClock, sleep: FakeSleep
) -> ClientCredentialsToken:
    return ClientCredentialsToken(
        session,
        ims_url=ims.url,
        client_id=CLIENT_ID,
        client_secret=SECRET,
        scopes=DEFAULT_SCOPES,
        clock=clock,
        sleep=sleep,
    )


def ok(token: str, expires_in: object = DAY) -> dict[str, object]:
    return {"access_token": token, "token_type": "bearer", "expires_in": expires_in}


def assert_safe(message: str) -> None:
    """A message quoting a server is one printable line: no ESC, no BEL, no newline."""
    assert "\x1b" not in message
    assert "\x07" not in message
    assert message.isprintable(), repr(message)


def assert_jittered_below(waits: list[float], ceilings: list[float]) -> None:
    """Each wait is a full-jitter draw: somewhere in [0, its ceiling]."""
    assert len(waits) == len(ceilings)
    assert all(0.0 <= wait <= ceiling for wait, ceiling in zip(waits, ceilings, strict=True))


# -- fetching --------------------------------------------------------------------------------


async def test_first_token_call_posts_the_client_credentials_form(
    ims: FakeIMS, provider: ClientCredentialsToken
) -> None:
    """IMS gets grant_type, client_id, client_secret and scope as a form."""
    ims.reply(payload=ok("t1"))
    assert await provider.token() == "t1"
    assert ims.forms == [
        {
            "grant_type": "client_credentials",
            "client_id": CLIENT_ID,
            "client_secret": SECRET,
            "scope": DEFAULT_SCOPES,
        }
    ]


async def test_concurrent_first_calls_share_one_ims_request(
    ims: FakeIMS, provider: ClientCredentialsToken
) -> None:
    """Twenty workers starting at once cause one IMS request and all get its token."""
    started, release = asyncio.Event(), asyncio.Event()

    ims.reply(ok("shared"), started=started, release=release)
    workers = [asyncio.create_task(provider.token()) for _ in range(20)]
    await started.wait()
    for _ in range(5):
        await asyncio.sleep(0)  # let every worker reach the lock
    release.set()
    assert await asyncio.gather(*workers) == ["shared"] * 20
    assert ims.requests == 1


async def test_token_is_reused_until_the_renewal_margin(
    ims: FakeIMS, provider: ClientCredentialsToken, clock: FakeClock
) -> None:
    """A token is served without new requests until 300 s before it expires."""
    ims.reply(payload=ok("t1"))
    await provider.token()
    clock.advance(DAY - 301)
    assert await provider.token() == "t1"
    assert ims.requests == 1


async def test_token_is_renewed_proactively_within_the_margin(
    ims: FakeIMS, provider: ClientCredentialsToken, clock: FakeClock
) -> None:
    """Inside the last 300 s of a token's life, token() fetches the next one first."""
    ims.reply(payload=ok("t1"))
    ims.reply(payload=ok("t2"))
    await provider.token()
    clock.advance(DAY - 299)
    assert await provider.token() == "t2"
    assert ims.requests == 2


async def test_short_lived_token_renews_at_a_tenth_of_its_lifetime(
    ims: FakeIMS, provider: ClientCredentialsToken, clock: FakeClock
) -> None:
    """A 60 s token is renewed 6 s before expiry, not 300 s (which would be at once)."""
    ims.reply(payload=ok("t1", 60))
    ims.reply(payload=ok("t2", 60))
    await provider.token()
    clock.advance(53)
    assert await provider.token() == "t1"
    clock.advance(2)
    assert await provider.token() == "t2"
    assert ims.requests == 2


async def test_expires_in_given_in_milliseconds_is_understood(
    ims: FakeIMS, provider: ClientCredentialsToken, clock: FakeClock
) -> None:
    """An expires_in too large for seconds (older IMS endpoints) is read as milliseconds."""
    ims.reply(payload=ok("t1", 86_399_996))
    ims.reply(payload=ok("t2"))
    await provider.token()
    clock.advance(DAY - 299)
    assert await provider.token() == "t2"


@pytest.mark.parametrize("expires_in", [None, "soon", -5, 0, True, [1]])
async def test_token_without_a_usable_lifetime_is_kept_until_refused(
    ims: FakeIMS, provider: ClientCredentialsToken, clock: FakeClock, expires_in: object
) -> None:
    """Without a usable expires_in, the token is used until the API refuses it."""
    ims.reply(payload=ok("t1", expires_in))
    ims.reply(payload=ok("t2"))
    await provider.token()
    clock.advance(10 * DAY)
    assert await provider.token() == "t1"
    assert await provider.renew("t1") == "t2"


async def test_expires_in_as_a_numeric_string_is_understood(
    ims: FakeIMS, provider: ClientCredentialsToken, clock: FakeClock
) -> None:
    """expires_in "60" is read as 60 seconds."""
    ims.reply(payload=ok("t1", "60"))
    ims.reply(payload=ok("t2"))
    await provider.token()
    clock.advance(55)
    assert await provider.token() == "t2"


# -- renewing after a 401 ----------------------------------------------------------------------


async def test_concurrent_renewals_of_the_same_stale_token_make_one_request(
    ims: FakeIMS, provider: ClientCredentialsToken
) -> None:
    """Ten workers refused with the same token share one renewal and all get the new token."""
    ims.reply(payload=ok("t1"))
    stale = await provider.token()
    started, release = asyncio.Event(), asyncio.Event()

    ims.reply(ok("t2"), started=started, release=release)
    renewers = [asyncio.create_task(provider.renew(stale)) for _ in range(10)]
    await started.wait()
    readers = [asyncio.create_task(provider.token()) for _ in range(3)]
    for _ in range(5):
        await asyncio.sleep(0)
    release.set()
    assert await asyncio.gather(*renewers) == ["t2"] * 10
    # Callers of token() during the renewal wait for it rather than get the refused token.
    assert await asyncio.gather(*readers) == ["t2"] * 3
    assert ims.requests == 2


async def test_renew_returns_the_newer_token_without_a_request(
    ims: FakeIMS, provider: ClientCredentialsToken
) -> None:
    """A worker late to report an old token gets the one already renewed, at no cost."""
    ims.reply(payload=ok("t1"))
    ims.reply(payload=ok("t2"))
    stale = await provider.token()
    assert await provider.renew(stale) == "t2"
    assert await provider.renew(stale) == "t2"
    assert ims.requests == 2


async def test_renew_before_any_token_fetches_one(
    ims: FakeIMS, provider: ClientCredentialsToken
) -> None:
    """renew() on a fresh provider simply fetches a token."""
    ims.reply(payload=ok("t1"))
    assert await provider.renew("from-elsewhere") == "t1"


async def test_renew_refuses_when_ims_gives_back_the_refused_token(
    ims: FakeIMS, provider: ClientCredentialsToken
) -> None:
    """If IMS hands out the very token the API refused, renewing cannot help: say so."""
    ims.reply(payload=ok("t1"), times=3)
    stale = await provider.token()
    with pytest.raises(AuthenticationError, match="gave back the access token") as info:
        await provider.renew(stale)
    assert info.value.status == 401
    assert info.value.error_code == "401013"


async def test_cancelled_fetch_lets_the_next_caller_fetch(
    ims: FakeIMS, provider: ClientCredentialsToken
) -> None:
    """A worker cancelled while fetching does not leave the others waiting forever."""
    started, release = asyncio.Event(), asyncio.Event()

    ims.reply(ok("t1"), started=started, release=release)
    ims.reply(ok("t1"))
    first = asyncio.create_task(provider.token())
    await started.wait()
    second = asyncio.create_task(provider.token())
    await asyncio.sleep(0)
    first.cancel()
    release.set()
    assert await second == "t1"
    with pytest.raises(asyncio.CancelledError):
        await first


# -- static tokens -----------------------------------------------------------------------------


async def test_static_token_is_returned_as_given() -> None:
    """A static token is served as is, without any request."""
    provider: TokenProvider = StaticToken("abc.def.ghi")
    assert await provider.token() == "abc.def.ghi"


async def test_static_token_renew_raises_a_clear_authentication_error() -> None:
    """A refused static token stops the batch with advice to get a new one."""
    provider = StaticToken("abc.def.ghi")
    with pytest.raises(AuthenticationError) as info:
        await provider.renew("abc.def.ghi")
    assert str(info.value) == (
        "the access token was refused (401013: expired or invalid); get a new one and run again"
    )
    assert info.value.status == 401
    assert info.value.error_code == "401013"


@pytest.mark.parametrize("token", ["", "   ", "abc\ndef", " abc", "abc\x00"])
def test_static_token_must_be_one_clean_value(token: str) -> None:
    """An empty token, or one with spaces around or control characters, is refused."""
    with pytest.raises(ConfigurationError):
        StaticToken(token)


def test_static_token_repr_hides_the_token() -> None:
    """The repr of a static token shows that it is one, not its value."""
    assert repr(StaticToken("abc.def.ghi")) == "<StaticToken token=***>"


# -- IMS errors --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "code", "description"),
    [
        (401, "invalid_client", "invalid client_secret parameter"),
        (400, "invalid_scope", "Invalid scope: bogus"),
        (400, "unsupported_grant_type", "grant_type must be client_credentials"),
        (400, "invalid_request", "missing client_id parameter"),
        (403, "unauthorized_client", "Client is not allowed"),
    ],
)
async def test_ims_refusal_is_an_authentication_error_naming_it(
    ims: FakeIMS,
    provider: ClientCredentialsToken,
    sleep: FakeSleep,
    status: int,
    code: str,
    description: str,
) -> None:
    """A 4xx from IMS fails at once, naming the status, error code and description."""
    ims.reply(status=status, payload={"error": code, "error_description": description})
    with pytest.raises(AuthenticationError) as info:
        await provider.token()
    assert str(info.value) == (
        f"IMS refused the token request (HTTP {status} {code}: {description})"
    )
    assert info.value.status == status
    assert info.value.error_code == code
    assert ims.requests == 1
    assert sleep.waits == []


async def test_ims_refusal_without_error_fields_still_names_the_status(
    ims: FakeIMS, provider: ClientCredentialsToken
) -> None:
    """A 4xx JSON body lacking error fields gives a message with the status alone."""
    ims.reply(status=400, payload={"message": "nope"})
    with pytest.raises(AuthenticationError, match=r"HTTP 400 unknown_error: no description"):
        await provider.token()


async def test_ims_error_description_is_kept_to_one_short_line(
    ims: FakeIMS, provider: ClientCredentialsToken
) -> None:
    """A multi-line or huge description is folded to one line of bounded length."""
    ims.reply(status=400, payload={"error": "invalid_scope", "error_description": "a\nb" * 500})
    with pytest.raises(AuthenticationError) as info:
        await provider.token()
    message = str(info.value)
    assert "\n" not in message
    assert len(message) < 300


@pytest.mark.parametrize(
    ("status", "body", "message"),
    [
        (200, b"<html>proxy login</html>", "answered HTTP 200 with a body that is not JSON"),
        (200, b'{"token_type": "bearer"}', "answered HTTP 200 without an access_token"),
        (200, b'{"access_token": ""}', "answered HTTP 200 without an access_token"),
        (200, b'{"access_token": 42}', "answered HTTP 200 without an access_token"),
        (200, b'["access_token"]', "answered HTTP 200 without an access_token"),
        (400, b"Bad Request", "answered HTTP 400 with a body that is not JSON"),
        (302, b"", "answered HTTP 302 with a body that is not JSON"),
    ],
)
async def test_unusable_ims_answer_is_an_authentication_error(
    ims: FakeIMS,
    provider: ClientCredentialsToken,
    status: int,
    body: bytes,
    message: str,
) -> None:
    """An answer that is not JSON, or has no access_token, fails at once and says which."""
    ims.reply(status=status, body=body)
    with pytest.raises(AuthenticationError, match=message) as info:
        await provider.token()
    assert info.value.status == status
    assert ims.requests == 1


# -- transient IMS failures --------------------------------------------------------------------


@pytest.mark.parametrize("status", [500, 502, 503, 504, 429])
async def test_transient_ims_status_is_retried_then_succeeds(
    ims: FakeIMS, provider: ClientCredentialsToken, sleep: FakeSleep, status: int
) -> None:
    """5xx and 429 from IMS are retried, each wait jittered below a doubling ceiling."""
    ims.reply(status=status, body=b"busy")
    ims.reply(status=status, payload={"error": "server_error"})
    ims.reply(payload=ok("t1"))
    assert await provider.token() == "t1"
    assert ims.requests == 3
    assert_jittered_below(sleep.waits, [0.5, 1.0])


async def test_persistent_5xx_gives_up_after_the_attempts_naming_the_status(
    ims: FakeIMS, provider: ClientCredentialsToken, sleep: FakeSleep
) -> None:
    """After three 503s the error names IMS, the status and the number of attempts."""
    host = ims.url.split("/")[2]
    ims.reply(status=503, body=b"down", times=3)
    with pytest.raises(AuthenticationError) as info:
        await provider.token()
    assert str(info.value) == (
        f"could not get an access token from IMS ({host}): HTTP 503 after 3 attempts"
    )
    assert info.value.status == 503
    assert ims.requests == 3
    assert_jittered_below(sleep.waits, [0.5, 1.0])


@pytest.mark.parametrize(
    ("error", "message"),
    [
        (aiohttp.ClientConnectionError("connection reset"), "network error"),
        (aiohttp.ServerDisconnectedError(), "network error"),
        (TimeoutError(), "no answer within 30 seconds"),
    ],
)
async def test_network_failure_is_retried_then_reported(
    ims: FakeIMS,
    provider: ClientCredentialsToken,
    sleep: FakeSleep,
    error: Exception,
    message: str,
) -> None:
    """Network errors and timeouts are retried, then reported in one line with the cause."""
    ims.fail(error, times=3)
    with pytest.raises(AuthenticationError, match=message) as info:
        await provider.token()
    assert info.value.__cause__ is not None
    assert ims.requests == 3
    assert len(sleep.waits) == 2


async def test_ims_waits_are_drawn_from_the_given_rng(
    session: aiohttp.ClientSession, ims: FakeIMS, sleep: FakeSleep
) -> None:
    """The jitter of IMS retries comes from the injected rng: the same seed, the same waits."""
    provider = ClientCredentialsToken(
        session,
        ims_url=ims.url,
        client_id=CLIENT_ID,
        client_secret=SECRET,
        scopes=DEFAULT_SCOPES,
        sleep=sleep,
        rng=random.Random(7),
    )
    ims.reply(status=503, body=b"busy", times=2)
    ims.reply(payload=ok("t1"))
    assert await provider.token() == "t1"
    expected = random.Random(7)
    assert sleep.waits == [expected.uniform(0.0, 0.5), expected.uniform(0.0, 1.0)]


@pytest.mark.parametrize("status", [429, 503])
async def test_ims_retry_after_is_a_floor_on_the_wait(
    ims: FakeIMS, provider: ClientCredentialsToken, sleep: FakeSleep, status: int
) -> None:
    """A Retry-After from IMS is waited out (it outweighs the jittered backoff)."""
    ims.reply(status=status, body=b"busy", headers={"Retry-After": "5"})
    ims.reply(payload=ok("t1"))
    assert await provider.token() == "t1"
    assert sleep.waits == [5.0]


async def test_ims_retry_after_beyond_the_cap_gives_up_at_once(
    ims: FakeIMS, provider: ClientCredentialsToken, sleep: FakeSleep
) -> None:
    """An hour's Retry-After is not waited out with every worker blocked: stop, saying so."""
    ims.reply(status=429, body=b"slow down", headers={"Retry-After": "3600"})
    with pytest.raises(AuthenticationError) as info:
        await provider.token()
    assert "asked to wait 3600 s" in str(info.value)
    assert info.value.status == 429
    assert ims.requests == 1
    assert sleep.waits == []


@pytest.mark.parametrize(
    "error",
    [
        ConnectionResetError(errno.ECONNRESET, "Connection reset by peer"),
        OSError(errno.EHOSTUNREACH, "No route to host"),
    ],
)
async def test_a_bare_socket_error_is_retried_then_an_authentication_error(
    ims: FakeIMS, provider: ClientCredentialsToken, error: OSError
) -> None:
    """An OSError aiohttp did not wrap never escapes unmapped: retried, then one clear error."""
    ims.fail(error, times=3)
    with pytest.raises(AuthenticationError, match="network error") as info:
        await provider.token()
    assert info.value.__cause__ is not None
    assert ims.requests == 3


async def test_ims_error_fields_reach_the_message_without_escape_or_bell(
    ims: FakeIMS, provider: ClientCredentialsToken
) -> None:
    """IMS's error code and description lose ESC, BEL and newlines before reaching stderr."""
    ims.reply(
        status=400,
        payload={"error": f"invalid{HOSTILE}scope", "error_description": f"nope{HOSTILE}\nx"},
    )
    with pytest.raises(AuthenticationError) as info:
        await provider.token()
    assert_safe(str(info.value))
    assert info.value.error_code is not None
    assert_safe(info.value.error_code)


async def test_ims_network_error_text_is_quoted_without_escape_or_bell(
    ims: FakeIMS, provider: ClientCredentialsToken
) -> None:
    """The text of a network failure (which a proxy may have written) is one safe line."""
    ims.fail(aiohttp.ClientConnectionError(f"reset{HOSTILE}"), times=3)
    with pytest.raises(AuthenticationError) as info:
        await provider.token()
    assert_safe(str(info.value))


async def test_network_failure_then_success_gives_the_token(
    ims: FakeIMS, provider: ClientCredentialsToken
) -> None:
    """One dropped connection to IMS costs a retry, not the batch."""
    ims.fail(aiohttp.ClientConnectionError("reset"))
    ims.reply(payload=ok("t1"))
    assert await provider.token() == "t1"


async def test_failed_early_renewal_keeps_the_valid_token_and_tries_later(
    ims: FakeIMS, provider: ClientCredentialsToken, clock: FakeClock
) -> None:
    """If IMS is down during the renewal margin, the still-valid token keeps the batch going."""
    ims.reply(payload=ok("t1"))
    ims.reply(status=503, body=b"down", times=3)
    ims.reply(payload=ok("t2"))
    await provider.token()
    clock.advance(DAY - 200)
    assert await provider.token() == "t1"
    assert "HTTP 503" in repr(provider)
    assert ims.requests == 4
    assert await provider.token() == "t1"  # no new attempt right away
    assert ims.requests == 4
    clock.advance(30)
    assert await provider.token() == "t2"
    assert "last_error" not in repr(provider)


async def test_failed_renewal_after_expiry_raises(
    ims: FakeIMS, provider: ClientCredentialsToken, clock: FakeClock
) -> None:
    """Once the token has expired, a failing IMS is an error, not a stale token."""
    ims.reply(payload=ok("t1"))
    ims.reply(status=401, payload={"error": "invalid_client", "error_description": "gone"})
    await provider.token()
    clock.advance(DAY + 1)
    with pytest.raises(AuthenticationError, match="invalid_client"):
        await provider.token()


async def test_failed_renewal_after_a_401_raises(
    ims: FakeIMS, provider: ClientCredentialsToken
) -> None:
    """A renewal forced by a 401 does not fall back on the refused token."""
    ims.reply(payload=ok("t1"))
    ims.reply(status=400, payload={"error": "invalid_scope", "error_description": "x"})
    stale = await provider.token()
    with pytest.raises(AuthenticationError, match="invalid_scope"):
        await provider.renew(stale)


async def test_failed_renewal_is_shared_by_the_waiting_renewers(
    ims: FakeIMS, provider: ClientCredentialsToken
) -> None:
    """Renewers queued behind a failing renewal get its error without asking IMS again."""
    ims.reply(ok("t1"))
    stale = await provider.token()
    started, release = asyncio.Event(), asyncio.Event()
    ims.reply(
        {"error": "invalid_client", "error_description": "revoked"},
        status=401,
        started=started,
        release=release,
    )
    renewers = [asyncio.create_task(provider.renew(stale)) for _ in range(5)]
    await started.wait()
    release.set()
    results = await asyncio.gather(*renewers, return_exceptions=True)
    assert all(isinstance(result, AuthenticationError) for result in results)
    assert all("invalid_client: revoked" in str(result) for result in results)
    assert ims.requests == 2


async def test_refused_token_is_never_handed_out_after_a_failed_renewal(
    ims: FakeIMS, provider: ClientCredentialsToken
) -> None:
    """After a failed renewal, token() asks IMS again rather than return the refused token."""
    ims.reply(ok("t1"))
    ims.reply(status=503, body=b"down", times=6)
    stale = await provider.token()
    with pytest.raises(AuthenticationError, match="HTTP 503"):
        await provider.renew(stale)
    with pytest.raises(AuthenticationError, match="HTTP 503"):
        await provider.token()
    assert ims.requests == 7


# -- secrets stay secret -----------------------------------------------------------------------


async def test_secret_never_appears_in_reprs_messages_or_tracebacks(
    ims: FakeIMS, provider: ClientCredentialsToken
) -> None:
    """Neither the client secret nor the token shows in any repr, message or traceback."""
    token = "eyJ-the-access-token-value"
    seen: list[str] = []

    def collect(exc: BaseException, *, whole_traceback: bool = True) -> None:
        seen.extend([str(exc), repr(exc)])
        if whole_traceback:
            seen.append("".join(traceback.format_exception(exc)))

    ims.reply(status=401, payload={"error": "invalid_client", "error_description": SECRET})
    ims.fail(aiohttp.ClientConnectionError(f"echo {SECRET}"), times=3)
    ims.reply(status=503, body=SECRET.encode(), times=3)
    ims.reply(status=200, body=SECRET.encode())
    for scenario in range(4):
        with pytest.raises(AuthenticationError) as info:
            await provider.token()
        # A lower-layer error stays as __cause__ for debuggers; only our message is scrubbed,
        # and aiohttp never puts a request body in its errors, unlike this contrived one.
        collect(info.value, whole_traceback=scenario != 1)
    ims.reply(payload=ok(token))
    await provider.token()
    ims.reply(status=400, payload={"error": "invalid_scope", "error_description": "x"})
    with pytest.raises(AuthenticationError) as info:
        await provider.renew(token)
    collect(info.value)
    seen.append(repr(provider))
    seen.append(repr(StaticToken(token)))
    with pytest.raises(AuthenticationError) as info:
        await StaticToken(token).renew(token)
    collect(info.value)
    credentials = Credentials(api_key="k", org_id="o", access_token=token, client_secret=SECRET)
    seen.append(repr(credentials))
    assert len(seen) > 10
    for text in seen:
        assert SECRET not in text
        assert token not in text


async def test_repr_shows_the_provider_state(
    provider: ClientCredentialsToken, ims: FakeIMS
) -> None:
    """The repr names IMS and client, whether a token is held, and the requests made."""
    host = ims.url.split("/")[2]
    assert repr(provider) == (
        f"<ClientCredentialsToken ims='{host}' client_id='my-client-id' token=none requests=0>"
    )


async def test_repr_shows_time_left_on_the_held_token(
    ims: FakeIMS, provider: ClientCredentialsToken, clock: FakeClock
) -> None:
    """Once a token is held, the repr says how long it has left."""
    ims.reply(payload=ok("t1"))
    await provider.token()
    clock.advance(399)
    assert "token=held expires_in=86000s requests=1" in repr(provider)
    clock.advance(DAY)
    assert "token=expired" in repr(provider)


# -- choosing a provider -----------------------------------------------------------------------


async def test_token_provider_uses_the_access_token_when_given(
    session: aiohttp.ClientSession,
) -> None:
    """An access token, even beside a client, gives a StaticToken: the user asked for it."""
    credentials = Credentials(
        api_key="k", org_id="o", access_token="tok", client_id="id", client_secret=SECRET
    )
    provider = token_provider(credentials, session)
    assert isinstance(provider, StaticToken)
    assert await provider.token() == "tok"


async def test_token_provider_uses_ims_for_a_client(
    session: aiohttp.ClientSession, ims: FakeIMS
) -> None:
    """A client id and secret give a ClientCredentialsToken against the configured IMS URL."""
    credentials = Credentials(
        api_key="k", org_id="o", client_id="id", client_secret=SECRET, ims_url=ims.url, scopes="s"
    )
    provider = token_provider(credentials, session)
    assert isinstance(provider, ClientCredentialsToken)
    ims.reply(payload=ok("t1"))
    assert await provider.token() == "t1"
    assert ims.forms[0]["scope"] == "s"


@pytest.mark.parametrize(
    ("fields", "missing"),
    [
        ({}, ["access token (or client id and client secret)"]),
        ({"client_id": "id"}, ["client secret"]),
        ({"client_secret": SECRET}, ["client id"]),
    ],
)
async def test_token_provider_names_what_is_missing(
    session: aiohttp.ClientSession, fields: dict[str, str], missing: list[str]
) -> None:
    """Without a token or a full client, the error names what to add."""
    credentials = Credentials(api_key="k", org_id="o", **fields)
    with pytest.raises(MissingCredentialsError) as info:
        token_provider(credentials, session)
    assert info.value.missing == missing
    assert SECRET not in str(info.value)


async def test_token_provider_refuses_plain_http_ims(session: aiohttp.ClientSession) -> None:
    """A client secret is never sent to IMS over plain http to a remote host."""
    credentials = Credentials(
        api_key="k",
        org_id="o",
        client_id="id",
        client_secret=SECRET,
        ims_url="http://ims-na1.adobelogin.com/ims/token/v3",
    )
    with pytest.raises(ConfigurationError, match=r"IMS URL .* must use https://"):
        token_provider(credentials, session)


async def test_zero_attempts_is_a_configuration_error(session: aiohttp.ClientSession) -> None:
    """At least one IMS attempt is needed."""
    with pytest.raises(ConfigurationError):
        ClientCredentialsToken(
            session,
            ims_url="https://ims.test/",
            client_id="id",
            client_secret=SECRET,
            scopes="s",
            attempts=0,
        )
