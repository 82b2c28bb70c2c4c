"""Tests of bulkretry._http.secrets: secret files, the Secret wrapper and the Redactor."""

from __future__ import annotations

import os
import pickle
import threading
from pathlib import Path
from typing import NoReturn

import pytest

from bulkretry._exceptions import ConfigurationError
from bulkretry._http import secrets as _secrets
from bulkretry._http.secrets import MASK, Redactor, Secret, read_secret_file

TOKEN = "eyJhbGciOiJSUzI1NiJ9.payload-part.signature_part"

is_root = hasattr(os, "geteuid") and os.geteuid() == 0
posix_only = pytest.mark.skipif(os.name != "posix", reason="file modes are POSIX")


def write(path: Path, content: str | bytes, mode: int = 0o600) -> str:
    if isinstance(content, str):
        content = content.encode()
    path.write_bytes(content)
    path.chmod(mode)
    return str(path)


class Warnings(list[str]):
    def __call__(self, message: str) -> None:
        self.append(message)


# -- read_secret_file ----------------------------------------------------------------------


def test_secret_file_is_read_and_stripped_of_surrounding_whitespace(tmp_path: Path) -> None:
    """The surrounding spaces and final newline of a token file are dropped."""
    warnings = Warnings()
    path = write(tmp_path / "token", f"  {TOKEN}\r\n\n")
    assert read_secret_file(path, what="token file", warn=warnings) == TOKEN
    assert warnings == []


def test_secret_file_with_a_byte_order_mark_is_read(tmp_path: Path) -> None:
    """A UTF-8 byte order mark (Windows editors) is not taken as part of the secret."""
    path = write(tmp_path / "token", "\ufeff" + TOKEN + "\n")
    assert read_secret_file(path, what="token file", warn=Warnings()) == TOKEN


@posix_only
@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_secret_file_readable_by_others_warns_with_its_mode(tmp_path: Path, mode: int) -> None:
    """A file that group or others may access is read, with one warning naming mode and fix."""
    warnings = Warnings()
    path = write(tmp_path / "token", TOKEN, mode)
    assert read_secret_file(path, what="token file", warn=warnings) == TOKEN
    assert len(warnings) == 1
    assert f"{mode:04o}" in warnings[0]
    assert f"chmod 600 {path}" in warnings[0]
    assert TOKEN not in warnings[0]


@posix_only
@pytest.mark.parametrize("mode", [0o600, 0o400])
def test_secret_file_private_to_its_owner_does_not_warn(tmp_path: Path, mode: int) -> None:
    """Modes 600 and 400 raise no warning."""
    warnings = Warnings()
    read_secret_file(write(tmp_path / "token", TOKEN, mode), what="token file", warn=warnings)
    assert warnings == []


@posix_only
def test_secret_file_can_be_a_pipe(tmp_path: Path) -> None:
    """A FIFO, as made by ``--token-file <(vault read …)``, is read and not mode-checked."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo, 0o644)

    def feed() -> None:
        with open(fifo, "w") as writer:
            writer.write(TOKEN + "\n")

    feeder = threading.Thread(target=feed)
    feeder.start()
    warnings = Warnings()
    try:
        assert read_secret_file(str(fifo), what="token file", warn=warnings) == TOKEN
    finally:
        feeder.join()
    assert warnings == []


def test_missing_secret_file_names_the_path(tmp_path: Path) -> None:
    """A missing file is a ConfigurationError naming the path."""
    path = str(tmp_path / "nope")
    with pytest.raises(ConfigurationError, match=r"token file .*nope does not exist"):
        read_secret_file(path, what="token file", warn=Warnings())


def test_directory_as_secret_file_is_refused(tmp_path: Path) -> None:
    """A directory is a ConfigurationError saying so."""
    with pytest.raises(ConfigurationError, match="is a directory"):
        read_secret_file(str(tmp_path), what="token file", warn=Warnings())


@pytest.mark.parametrize("content", ["", "\n", "   \n\t\n"])
def test_empty_secret_file_is_refused(tmp_path: Path, content: str) -> None:
    """An empty or blank file is a ConfigurationError saying it is empty."""
    path = write(tmp_path / "token", content)
    with pytest.raises(ConfigurationError, match="is empty"):
        read_secret_file(path, what="token file", warn=Warnings())


@pytest.mark.skipif(is_root or os.name != "posix", reason="root reads any file")
def test_unreadable_secret_file_is_refused(tmp_path: Path) -> None:
    """A file without read permission is a ConfigurationError saying so."""
    path = write(tmp_path / "token", TOKEN, 0o000)
    with pytest.raises(ConfigurationError, match="permission denied"):
        read_secret_file(path, what="token file", warn=Warnings())


def test_secret_file_refused_by_the_os_is_refused_even_for_root(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A PermissionError on open (as for a non-root user) becomes a ConfigurationError."""

    def refuse(*args: object, **kwargs: object) -> NoReturn:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(_secrets, "open", refuse, raising=False)
    path = write(tmp_path / "token", TOKEN)
    with pytest.raises(
        ConfigurationError, match=r"token file .* cannot be read: permission denied"
    ):
        read_secret_file(path, what="token file", warn=Warnings())


def test_secret_file_with_two_lines_is_refused_without_showing_them(tmp_path: Path) -> None:
    """A file holding more than the secret is refused; the message shows none of its content."""
    path = write(tmp_path / "token", f"BULKRETRY_ACCESS_TOKEN=x\n{TOKEN}\n")
    with pytest.raises(ConfigurationError, match="more than one line") as info:
        read_secret_file(path, what="token file", warn=Warnings())
    assert TOKEN not in str(info.value)
    assert "BULKRETRY_ACCESS_TOKEN=x" not in str(info.value)


def test_secret_file_with_bearer_prefix_is_refused(tmp_path: Path) -> None:
    """'Bearer <token>' in the file is refused, since the header would say Bearer twice."""
    path = write(tmp_path / "token", f"Bearer {TOKEN}\n")
    with pytest.raises(ConfigurationError, match="starts with 'Bearer '") as info:
        read_secret_file(path, what="token file", warn=Warnings())
    assert TOKEN not in str(info.value)


def test_binary_secret_file_is_refused(tmp_path: Path) -> None:
    """A file that is not UTF-8 text is refused."""
    path = write(tmp_path / "token", b"\xff\xfe\x00garbage")
    with pytest.raises(ConfigurationError, match="not UTF-8 text"):
        read_secret_file(path, what="token file", warn=Warnings())


def test_huge_secret_file_is_refused(tmp_path: Path) -> None:
    """A file far larger than any token is refused as probably the wrong file."""
    path = write(tmp_path / "token", "x" * (65 * 1024))
    with pytest.raises(ConfigurationError, match="larger than 64 KiB"):
        read_secret_file(path, what="token file", warn=Warnings())


# -- Secret ---------------------------------------------------------------------------------


def test_secret_hides_its_value_from_repr_and_str() -> None:
    """repr, str and f-strings show *** while reveal() gives the value."""
    secret = Secret(TOKEN)
    assert TOKEN not in repr(secret)
    assert TOKEN not in str(secret)
    assert TOKEN not in f"{secret} {secret!r} {[secret]}"
    assert secret.reveal() == TOKEN


def test_secret_cannot_be_pickled() -> None:
    """Pickling a Secret fails rather than writing the value somewhere."""
    with pytest.raises(TypeError):
        pickle.dumps(Secret(TOKEN))


# -- Redactor -------------------------------------------------------------------------------


def test_redactor_replaces_each_secret_whole() -> None:
    """Every occurrence of every secret becomes ***."""
    redactor = Redactor([TOKEN, "p8e-client-secret"])
    text = f"token={TOKEN} secret=p8e-client-secret again {TOKEN}"
    assert redactor.redact(text) == f"token={MASK} secret={MASK} again {MASK}"


def test_redactor_masks_the_longer_of_overlapping_secrets_whole() -> None:
    """A secret containing another is masked whole, leaving no tail of it."""
    redactor = Redactor(["abcdef", "abcdef-and-more"])
    assert redactor.redact("x abcdef-and-more y abcdef") == f"x {MASK} y {MASK}"


def test_redactor_masks_url_encoded_forms() -> None:
    """A secret logged inside a form body or URL, percent-encoded, is masked too."""
    redactor = Redactor(["s3cr3t/+=&x y"])
    assert redactor.redact("client_secret=s3cr3t%2F%2B%3D%26x+y&scope=a") == (
        f"client_secret={MASK}&scope=a"
    )
    assert redactor.redact("s3cr3t%2F%2B%3D%26x%20y") == MASK


def test_redactor_ignores_empty_and_none() -> None:
    """An empty or missing secret does not mask everything."""
    redactor = Redactor(["", None])
    assert redactor.redact("nothing to hide") == "nothing to hide"


def test_redactor_accepts_secret_objects_and_later_additions() -> None:
    """Secrets can be Secret objects and can be added once a token is fetched."""
    redactor = Redactor([Secret("first-secret")])
    redactor.add(TOKEN)
    assert redactor.redact(f"first-secret {TOKEN}") == f"{MASK} {MASK}"


def test_redactor_repr_counts_secrets_without_showing_them() -> None:
    """The repr says how many secrets are held and shows none."""
    redactor = Redactor([TOKEN, "p8e-client-secret"])
    assert repr(redactor) == "<Redactor secrets=2>"


def test_redact_headers_masks_credentials_and_shows_the_rest() -> None:
    """Authorization keeps its scheme, token/secret headers are masked, x-api-key is shown."""
    redactor = Redactor([TOKEN])
    headers = {
        "Authorization": f"Bearer {TOKEN}",
        "x-api-key": "my-client-id",
        "x-gw-ims-org-id": "ORG@AdobeOrg",
        "x-sandbox-name": "prod",
        "X-Session-Token": "abc",
        "x-client-secret": "def",
        "Cookie": "a=b",
        "x-echo": f"see {TOKEN}",
    }
    assert redactor.redact_headers(headers) == {
        "Authorization": f"Bearer {MASK}",
        "x-api-key": "my-client-id",
        "x-gw-ims-org-id": "ORG@AdobeOrg",
        "x-sandbox-name": "prod",
        "X-Session-Token": MASK,
        "x-client-secret": MASK,
        "Cookie": MASK,
        "x-echo": f"see {MASK}",
    }


def test_redact_headers_masks_an_authorization_without_scheme() -> None:
    """An Authorization value with no scheme is masked entirely."""
    assert Redactor().redact_headers({"authorization": TOKEN}) == {"authorization": MASK}
