"""Tests of bulkretry._http.tls: verifying contexts against a real TLS server, and URL checks."""

from __future__ import annotations

import os
import shutil
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from conftest import Certificates

from bulkretry._config import Credentials, Settings
from bulkretry._exceptions import AuthenticationError, ConfigurationError
from bulkretry._http import tls
from bulkretry._http.auth import ClientCredentialsToken
from bulkretry._http.client import make_session
from bulkretry._http.tls import check_url, is_loopback, proxy_for, session_kwargs, ssl_context

PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY")


@pytest.fixture
def no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep a proxy in the test runner's environment from intercepting loopback requests."""
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


@pytest.fixture
async def tls_server(certificates: Certificates, no_proxy: None) -> AsyncIterator[str]:
    """An HTTPS server on 127.0.0.1 with the test CA's certificate; yields its base URL."""

    async def hello(request: web.Request) -> web.Response:
        return web.Response(text="hello")

    async def ims(request: web.Request) -> web.Response:
        form = await request.post()
        assert form["grant_type"] == "client_credentials"
        return web.json_response({"access_token": "tls-token", "expires_in": 86399})

    app = web.Application()
    app.router.add_get("/", hello)
    app.router.add_post("/ims/token/v3", ims)
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(certificates.cert, certificates.key)
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_context)
        await site.start()
        host, port = runner.addresses[0][:2]
        yield f"https://{host}:{port}"
    finally:
        await runner.cleanup()


# -- against a real TLS server ---------------------------------------------------------------


async def test_self_signed_server_is_refused_by_the_system_store(tls_server: str) -> None:
    """Without the CA bundle the server's certificate does not verify."""
    async with aiohttp.ClientSession(**session_kwargs(None)) as session:
        with pytest.raises(aiohttp.ClientConnectorCertificateError):
            await session.get(tls_server)


async def test_self_signed_server_is_accepted_with_its_ca_bundle(
    tls_server: str, certificates: Certificates
) -> None:
    """With the CA bundle the request goes through."""
    async with (
        aiohttp.ClientSession(**session_kwargs(certificates.ca)) as session,
        session.get(tls_server) as response,
    ):
        assert response.status == 200
        assert await response.text() == "hello"


async def test_prebuilt_context_is_used_by_the_session(
    tls_server: str, certificates: Certificates
) -> None:
    """A context built before the loop starts can be passed instead of a bundle path."""
    context = ssl_context(certificates.ca)
    async with (
        aiohttp.ClientSession(**session_kwargs(context=context)) as session,
        session.get(tls_server) as response,
    ):
        assert response.status == 200


async def test_session_kwargs_leave_the_environment_alone_and_drop_cookies(
    certificates: Certificates,
) -> None:
    """The session reads no environment per request (proxy_for does it once), keeps no cookies."""
    kwargs = session_kwargs(certificates.ca, limit=7)
    async with aiohttp.ClientSession(**kwargs) as session:
        assert session.trust_env is False
        assert isinstance(session.cookie_jar, aiohttp.DummyCookieJar)
        assert kwargs["connector"].limit == 7


async def test_ims_over_untrusted_tls_fails_at_once_with_a_hint(tls_server: str) -> None:
    """A certificate error from IMS is not retried and names --ca-bundle."""
    sleeps: list[float] = []

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)

    async with aiohttp.ClientSession(**session_kwargs(None)) as session:
        provider = ClientCredentialsToken(
            session,
            ims_url=f"{tls_server}/ims/token/v3",
            client_id="id",
            client_secret="tls-secret",
            scopes="openid",
            sleep=sleep,
        )
        with pytest.raises(AuthenticationError, match=r"TLS failed.*--ca-bundle") as info:
            await provider.token()
    assert sleeps == []
    assert "tls-secret" not in str(info.value)


async def test_ims_over_tls_with_the_ca_bundle_gives_a_token(
    tls_server: str, certificates: Certificates
) -> None:
    """IMS behind a private CA works once its bundle is given."""
    async with aiohttp.ClientSession(**session_kwargs(certificates.ca)) as session:
        provider = ClientCredentialsToken(
            session,
            ims_url=f"{tls_server}/ims/token/v3",
            client_id="id",
            client_secret="tls-secret",
            scopes="openid",
        )
        assert await provider.token() == "tls-token"


# -- ssl_context -----------------------------------------------------------------------------


def test_default_context_verifies_against_the_system_store() -> None:
    """Without a bundle the context verifies certificates and host names."""
    context = ssl_context(None)
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname is True
    assert context.minimum_version >= ssl.TLSVersion.TLSv1_2


def test_bundle_context_verifies_too(certificates: Certificates) -> None:
    """With a bundle the context still verifies certificates and host names."""
    context = ssl_context(certificates.ca)
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname is True


LOOPBACK = "http://127.0.0.1:8080/x"
TOKEN = Credentials(api_key="k", org_id="o", access_token="t")
OAUTH = Credentials(api_key="k", org_id="o", client_id="c", client_secret="s")
LOCAL_IMS = Credentials(
    api_key="k", org_id="o", client_id="c", client_secret="s", ims_url="http://127.0.0.1:1/t"
)
BOTH = Credentials(api_key="k", org_id="o", access_token="t", client_id="c", client_secret="s")


@pytest.mark.parametrize(
    ("base_url", "credentials", "proxy", "reads"),
    [
        (LOOPBACK, TOKEN, None, False),
        (LOOPBACK, None, None, False),
        ("https://platform.adobe.io/x", TOKEN, None, True),
        # The token comes from IMS, over https by default; not with an access token given.
        (LOOPBACK, OAUTH, None, True),
        (LOOPBACK, LOCAL_IMS, None, False),
        (LOOPBACK, BOTH, None, False),
        # (The library's Settings may name any proxy; the CLI's never serves loopback.)
        (LOOPBACK, TOKEN, "https://proxy.example:3128", True),
    ],
    ids=["token", "none", "https", "oauth", "loopback-ims", "token-and-client", "https-proxy"],
)
async def test_the_ca_bundle_is_read_only_when_a_url_uses_tls(
    base_url: str,
    credentials: Credentials | None,
    proxy: str | None,
    reads: bool,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A session over plain http (loopback: the simulator) reads no CA bundle, some 45 ms of a
    start-up for a system's whole store; one that may meet https reads the bundle given."""
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes(b"not read over plain http")
    read: list[str | None] = []
    monkeypatch.setattr(
        tls, "ssl_context", lambda ca: read.append(ca) or ssl.create_default_context()
    )
    settings = Settings(
        base_url=base_url, credentials=credentials, proxy=proxy, ca_bundle=str(bundle)
    )
    async with make_session(settings):
        pass
    assert read == ([str(bundle)] if reads else [])


@pytest.mark.parametrize("bad", ["missing", "directory"])
def test_a_bad_ca_bundle_is_refused_over_plain_http_too(bad: str, tmp_path: Path) -> None:
    """Not read over plain http, a bundle must still be a file: a typo'd path is an error
    against the simulator as against Adobe."""
    bundle = tmp_path / "nope.pem" if bad == "missing" else tmp_path
    settings = Settings(base_url=LOOPBACK, ca_bundle=str(bundle))
    with pytest.raises(ConfigurationError, match=r"CA bundle .* (does not exist|is a directory)"):
        make_session(settings)


def test_missing_ca_bundle_is_a_configuration_error(tmp_path: Path) -> None:
    """A bundle path that does not exist is named in one line."""
    with pytest.raises(ConfigurationError, match=r"CA bundle .*nope\.pem does not exist"):
        ssl_context(str(tmp_path / "nope.pem"))


def test_directory_as_ca_bundle_is_a_configuration_error(tmp_path: Path) -> None:
    """A directory is refused: a PEM file is expected."""
    with pytest.raises(ConfigurationError, match="is a directory"):
        ssl_context(str(tmp_path))


@pytest.mark.parametrize(
    "content", [b"", b"not a certificate\n", b"-----BEGIN CERTIFICATE-----\nAAAA\n"]
)
def test_invalid_ca_bundle_is_a_configuration_error(tmp_path: Path, content: bytes) -> None:
    """An empty file or one without a valid PEM certificate is refused."""
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes(content)
    with pytest.raises(ConfigurationError, match="holds no valid PEM certificate"):
        ssl_context(str(bundle))


@pytest.mark.skipif(
    os.name != "posix" or os.geteuid() == 0, reason="root reads any file; modes are POSIX"
)
def test_unreadable_ca_bundle_is_a_configuration_error(
    certificates: Certificates, tmp_path: Path
) -> None:
    """A bundle without read permission is refused."""
    bundle = tmp_path / "bundle.pem"
    shutil.copy(certificates.ca, bundle)
    bundle.chmod(0)
    with pytest.raises(ConfigurationError, match="permission denied"):
        ssl_context(str(bundle))


# -- check_url -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "https://platform.adobe.io/data/foundation/flowservice",
        "https://ims-na1.adobelogin.com/ims/token/v3",
        "https://platform.adobe.io:443/",
        "HTTPS://PLATFORM.ADOBE.IO",
        "http://127.0.0.1:8080/flowservice",
        "http://127.1.2.3/",
        "http://localhost:9999",
        "http://LOCALHOST./x",
        "http://[::1]:8080/",
        "http://[::ffff:127.0.0.1]/",
        "https://10.0.0.5/",
    ],
)
def test_acceptable_urls_pass(url: str) -> None:
    """https anywhere, and http to loopback addresses, are accepted."""
    check_url(url, what="base URL")


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://platform.adobe.io/data", "must use https:// \\(only loopback"),
        ("http://10.0.0.5/", "must use https://"),
        ("http://localhost.evil.com/", "must use https://"),
        ("http://127.0.0.1.nip.io/", "must use https://"),
        ("http://[::2]/", "must use https://"),
        ("ftp://platform.adobe.io", "absolute https:// URL"),
        ("platform.adobe.io/data", "absolute https:// URL"),
        ("/data/foundation", "absolute https:// URL"),
        ("https://", "absolute https:// URL"),
        ("https://:443/", "has no host"),
        ("", "empty or contains spaces"),
        ("https://platform.adobe.io/a b", "empty or contains spaces"),
        ("https://platform.adobe.io/x?op=re-trigger", "must not have a query"),
        ("https://platform.adobe.io/x?", "must not have a query"),
        ("https://platform.adobe.io/x#frag", "must not have a query"),
        ("https://platform.adobe.io:99999/", "not a valid URL"),
        ("https://platform.adobe.io:port/", "not a valid URL"),
        ("https://[::1/", "not a valid URL"),
    ],
)
def test_unacceptable_urls_are_configuration_errors(url: str, message: str) -> None:
    """Each unsafe or malformed URL is refused with a message saying why."""
    with pytest.raises(ConfigurationError, match=message) as info:
        check_url(url, what="base URL")
    assert str(info.value).startswith("base URL")


@pytest.mark.parametrize(
    "url", ["https://user:hunter2@platform.adobe.io/", "https://hunter2@platform.adobe.io/"]
)
def test_url_with_credentials_is_refused_without_echoing_them(url: str) -> None:
    """user:password@ is refused, and the message does not repeat the password."""
    with pytest.raises(ConfigurationError, match="must not contain credentials") as info:
        check_url(url, what="base URL")
    assert "hunter2" not in str(info.value)


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.255.255.254", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("128.0.0.1", False),
        ("0.0.0.0", False),
        ("example.com", False),
        ("localhost.example.com", False),
    ],
)
def test_is_loopback(host: str, loopback: bool) -> None:
    """Only localhost, 127.0.0.0/8 and ::1 count as loopback."""
    assert is_loopback(host) is loopback


@pytest.mark.parametrize(
    ("url", "environ", "expected"),
    [
        ("https://platform.adobe.io/x", {"HTTPS_PROXY": "http://proxy:3128"}, "http://proxy:3128"),
        (
            "https://platform.adobe.io/x",
            {"https_proxy": "http://a:1", "HTTPS_PROXY": "http://b:2"},
            "http://a:1",
        ),
        ("https://platform.adobe.io/x", {"HTTP_PROXY": "http://proxy:3128"}, None),
        ("http://127.0.0.1:8080/x", {"HTTP_PROXY": "http://proxy:3128"}, None),
        (
            "https://platform.adobe.io/x",
            {"HTTPS_PROXY": "http://p:1", "NO_PROXY": "adobe.io"},
            None,
        ),
        (
            "https://platform.adobe.io/x",
            {"HTTPS_PROXY": "http://p:1", "no_proxy": ".adobe.io"},
            None,
        ),
        ("https://platform.adobe.io/x", {"HTTPS_PROXY": "http://p:1", "NO_PROXY": "*"}, None),
        (
            "https://platform.adobe.io/x",
            {"HTTPS_PROXY": "http://p:1", "NO_PROXY": "dobe.io"},
            "http://p:1",
        ),
        ("https://platform.adobe.io/x", {}, None),
    ],
)
def test_proxy_for_follows_proxy_and_no_proxy_variables(
    url: str, environ: dict[str, str], expected: str | None
) -> None:
    """HTTPS_PROXY applies to https URLs unless NO_PROXY names the host or a parent domain."""
    assert proxy_for(url, environ) == expected
