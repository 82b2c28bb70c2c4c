"""HTTP: the session (TLS, proxies), the Flow Service client, tokens and secrets."""
