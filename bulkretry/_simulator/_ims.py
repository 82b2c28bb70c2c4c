"""An IMS-like token issuer: ``POST /ims/token/v3`` with client credentials, tokens that expire."""

from __future__ import annotations

import base64
import random
from collections.abc import Mapping

import orjson

from ._clock import Clock

IMS_PATH = "/ims/token/v3"
_JWT_HEADER = base64.urlsafe_b64encode(b'{"alg":"RS256","x5u":"sim.cer"}').decode().rstrip("=")


def _ims_error(error: str, description: str) -> dict[str, object]:
    return {"error": error, "error_description": description}


class TokenIssuer:
    """Issue bearer tokens to one client and tell whether a token is still good.

    Expiry is judged on `clock`; the token's JWT-like payload carries `created_at` and
    `expires_in` in milliseconds on `wall_clock`, as Adobe's do.
    """

    __slots__ = (
        "_clock",
        "_rng",
        "_tokens",
        "_wall_clock",
        "client_id",
        "client_secret",
        "lifetime",
        "requests",
        "scopes",
        "static_token",
    )

    def __init__(
        self,
        *,
        client_id: str,
        client_secret: str,
        scopes: frozenset[str],
        lifetime: float,
        static_token: str,
        clock: Clock,
        wall_clock: Clock,
        rng: random.Random,
    ) -> None:
        self.client_id = client_id
        self.client_secret = client_secret
        self.scopes = scopes
        self.lifetime = lifetime
        self.static_token = static_token
        self.requests = 0
        self._clock = clock
        self._wall_clock = wall_clock
        self._rng = rng
        self._tokens: dict[str, float] = {}

    def __repr__(self) -> str:
        return f"TokenIssuer(issued={len(self._tokens)}, requests={self.requests})"

    def is_valid(self, token: str) -> bool:
        """Tell whether `token` is the static token or an issued one that has not expired."""
        if token == self.static_token:
            return True
        expiry = self._tokens.get(token)
        return expiry is not None and self._clock() < expiry

    def issue(self, form: Mapping[str, str]) -> tuple[int, dict[str, object]]:
        """Answer one token request: return the HTTP status and the JSON body, as IMS would."""
        self.requests += 1
        if form.get("grant_type") != "client_credentials":
            grant = form.get("grant_type", "")
            return 400, _ims_error("unsupported_grant_type", f"unsupported grant_type {grant!r}")
        if form.get("client_id") != self.client_id:
            return 400, _ims_error("invalid_client", "invalid client_id parameter")
        if form.get("client_secret") != self.client_secret:
            return 401, _ims_error("invalid_client", "invalid client_secret parameter")
        requested = {s.strip() for s in form.get("scope", "").split(",") if s.strip()}
        if not requested:
            return 400, _ims_error("invalid_scope", "invalid scope parameter")
        unknown = sorted(requested - self.scopes)
        if unknown:
            return 400, _ims_error("invalid_scope", f"Invalid scope ({','.join(unknown)})")
        token = self._new_token()
        self._tokens[token] = self._clock() + self.lifetime
        return 200, {
            "access_token": token,
            "token_type": "bearer",
            "expires_in": int(self.lifetime),
        }

    def _new_token(self) -> str:
        claims = {
            "type": "access_token",
            "client_id": self.client_id,
            "created_at": str(int(self._wall_clock() * 1000)),
            "expires_in": str(int(self.lifetime * 1000)),
            "nonce": f"{self._rng.getrandbits(64):016x}",
        }
        payload = base64.urlsafe_b64encode(orjson.dumps(claims)).decode().rstrip("=")
        signature = base64.urlsafe_b64encode(self._rng.randbytes(32)).decode().rstrip("=")
        return f"{_JWT_HEADER}.{payload}.{signature}"
