"""Build what a command needs from parsed flags and the environment: credentials, Settings."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping
from typing import Any

from .. import _config as C
from .._exceptions import ConfigurationError, MissingCredentialsError
from .options import ENV_PREFIX

__all__ = ["build_credentials", "build_settings"]


def _secret_env(env: Mapping[str, str], name: str) -> str | None:
    value = env.get(ENV_PREFIX + name)
    return value if value else None


def build_credentials(
    ns: argparse.Namespace, env: Mapping[str, str], warn: Callable[[str], None]
) -> C.Credentials:
    """Gather credentials from the environment and secret files; name whatever is missing."""
    from .._http.secrets import read_secret_file

    token = _secret_env(env, "ACCESS_TOKEN")
    if ns.token_file:
        token = read_secret_file(ns.token_file, what="token file", warn=warn)
    client_id = _secret_env(env, "CLIENT_ID")
    client_secret = _secret_env(env, "CLIENT_SECRET")
    if ns.client_secret_file:
        client_secret = read_secret_file(
            ns.client_secret_file, what="client secret file", warn=warn
        )
    api_key = _secret_env(env, "API_KEY") or client_id
    org_id = _secret_env(env, "ORG_ID")
    missing = []
    if not token and not (client_id and client_secret):
        if client_id:
            missing.append("BULKRETRY_CLIENT_SECRET (or --client-secret-file)")
        else:
            missing.append(
                "BULKRETRY_ACCESS_TOKEN (or --token-file, "
                "or BULKRETRY_CLIENT_ID and BULKRETRY_CLIENT_SECRET)"
            )
    if not api_key:
        missing.append("BULKRETRY_API_KEY")
    if not org_id:
        missing.append("BULKRETRY_ORG_ID")
    if missing or api_key is None or org_id is None:
        raise MissingCredentialsError(missing)
    return C.Credentials(
        api_key=api_key,
        org_id=org_id,
        sandbox=_secret_env(env, "SANDBOX") or C.DEFAULT_SANDBOX,
        access_token=token,
        client_id=client_id,
        client_secret=client_secret,
        scopes=_secret_env(env, "SCOPES") or C.DEFAULT_SCOPES,
        ims_url=_secret_env(env, "IMS_URL") or C.DEFAULT_IMS_URL,
    )


def build_settings(
    ns: argparse.Namespace,
    env: Mapping[str, str],
    warn: Callable[[str], None],
    *,
    given: frozenset[str] = frozenset(),
) -> C.Settings:
    """Build the frozen :class:`Settings` of a ``run`` from parsed flags and the environment;
    ``given`` names the options on the command line (not from a default)."""
    from .._http.tls import check_url, proxy_for

    check_url(ns.base_url, what="base URL")
    preflight = getattr(ns, "preflight", None)
    if preflight is None:
        preflight = not ns.dry_run
    credentials = None if ns.dry_run and not preflight else build_credentials(ns, env, warn)
    ims_url = credentials.ims_url if credentials is not None else C.DEFAULT_IMS_URL
    rate, burst, max_retriggers = ns.rate, ns.burst, ns.max_retriggers
    on_ambiguous = ns.on_ambiguous
    shard = getattr(ns, "shard", None)
    processes = 1 if shard is None else shard.count
    if shard is not None and processes > 1:  # (shard 1/1 is the whole batch: nothing to split)
        if on_ambiguous == "check":
            on_ambiguous = _held_with_shards(given, env)
        if ns.follow and ns.rounds > 1:
            # A further round of one shard's chain may be a run that another shard's input
            # names (a listing of failed runs): each would send it, and neither can know.
            raise ConfigurationError(
                f"--rounds {ns.rounds} with --shard: a further round of one shard may be a "
                "run another shard's input names, and both would send it; run the further "
                "rounds without --shard (--rounds 1 with --shard is fine)"
            )
        rate = rate / processes
        burst = _part(shard.index, processes, burst, least=1)
        if max_retriggers is not None:
            max_retriggers = _part(shard.index, processes, max_retriggers, least=0)
            if max_retriggers == 0:
                raise ConfigurationError(
                    f"--max-retriggers {ns.max_retriggers} split between {processes} shards "
                    f"leaves shard {shard.index} none: give at least {processes}"
                )
    return C.Settings(
        base_url=ns.base_url.rstrip("/"),
        op=ns.op,
        credentials=credentials,
        concurrency=ns.concurrency,
        rate=rate,
        burst=burst,
        processes=processes,
        max_attempts=ns.max_attempts,
        timeout=ns.timeout,
        deadline=ns.deadline,
        on_ambiguous=on_ambiguous,
        follow=ns.follow,
        rounds=ns.rounds,
        round_delay=ns.round_delay,
        poll=ns.poll,
        follow_timeout=ns.follow_timeout,
        run_id_pattern=ns.run_id_pattern,
        halt_on=ns.halt_on,
        max_retriggers=max_retriggers,
        retry_budget=ns.retry_budget,
        only=ns.only,
        retry_in_doubt=ns.retry_in_doubt,
        dry_run=ns.dry_run,
        preflight=preflight,
        ca_bundle=_ca_bundle(ns, env, check=preflight or not ns.dry_run),
        proxy=proxy_for(ns.base_url, env),
        ims_proxy=proxy_for(ims_url, env),
    )


def _held_with_shards(given: frozenset[str], env: Mapping[str, str]) -> str:
    """``hold`` for a shard's lost answers, where ``check`` was only the default: a look-up
    would take another shard's new run of the same flow for its own. Asked for by name (not
    a default, nor what a state file stored of one, which beats a variable asking for another
    setting), ``check`` is an error."""
    if "on_ambiguous" in given or env.get(ENV_PREFIX + "ON_AMBIGUOUS") == "check":
        raise ConfigurationError(
            "--on-ambiguous check with --shard: a look-up cannot tell this shard's lost "
            "re-trigger from another shard's new run of the same flow; lost answers are "
            "held in_doubt with --shard (resolve them once every shard is done, all "
            "results together: cat r1.jsonl r2.jsonl ... | bulkretry check)"
        )
    return "hold"


def _part(index: int, count: int, whole: int, *, least: int) -> int:
    """Shard ``index`` of ``count``'s part of ``whole`` (``--burst``, ``--max-retriggers``):
    the first shards take one more of what does not divide, so the parts add up to it."""
    return max(least, whole // count + (index <= whole % count))


def build_reader_settings(
    ns: argparse.Namespace, env: Mapping[str, str], warn: Callable[[str], None], **extra: Any
) -> C.Settings:
    """Build the :class:`Settings` of a command that only reads (``list-failed``, ``watch``):
    ``run``'s credentials, rate, retries and TLS, and the command's own ``extra`` fields."""
    from .._http.tls import check_url, proxy_for

    check_url(ns.base_url, what="base URL")
    credentials = build_credentials(ns, env, warn)
    return C.Settings(
        base_url=ns.base_url.rstrip("/"),
        credentials=credentials,
        rate=ns.rate,
        burst=ns.burst,
        max_attempts=ns.max_attempts,
        timeout=ns.timeout,
        deadline=ns.deadline,
        ca_bundle=_ca_bundle(ns, env),
        proxy=proxy_for(ns.base_url, env),
        ims_proxy=proxy_for(credentials.ims_url, env),
        **extra,
    )


def _ca_bundle(ns: argparse.Namespace, env: Mapping[str, str], *, check: bool = True) -> str | None:
    """Return the CA bundle: ``--ca-bundle`` (or its variable), else ``SSL_CERT_FILE``.

    With *check* (a command that may send: not a dry run without its pre-flight) it is checked
    to be a readable file now, whether or not a session is opened (``check`` over nothing in
    doubt opens none), and an error names ``SSL_CERT_FILE`` when the path came from there: a
    variable set for other tools is easily forgotten.
    """
    from .._http.tls import check_bundle

    if ns.ca_bundle:
        if check:
            check_bundle(ns.ca_bundle)
        return str(ns.ca_bundle)
    bundle = env.get("SSL_CERT_FILE") or None
    if bundle is not None and check:
        try:
            check_bundle(bundle)
        except ConfigurationError as exc:
            raise ConfigurationError(f"{exc} (named by SSL_CERT_FILE)") from None
    return bundle
