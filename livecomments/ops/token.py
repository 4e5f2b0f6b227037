"""`livecomments token`: mint a bearer token from the configured key (demos, tests, ops)."""

from __future__ import annotations

from typing import Any

import click
from cryptography.hazmat.primitives import serialization

from livecomments.config import ConfigError
from livecomments.config_layers import load
from livecomments.tokens import TokenKeyError, algorithm_of, mint


@click.command("token")
@click.option("--config", "config_file", type=click.Path(dir_okay=False), help="TOML config file (as for serve)")
@click.option("--sub", required=True, help="the user id (rate limits, moderation)")
@click.option("--name", default="", help="the author shown on comments (default: the sub)")
@click.option("--moderator", is_flag=True, help="add the moderator role")
@click.option("--ttl", type=click.IntRange(min=1), default=3600, show_default=True, help="seconds the token is valid")
@click.option("--private-key", type=click.Path(exists=True, dir_okay=False),
              help="PEM private key (RSA, EC, Ed25519) matching auth_jwt_public_key; default: auth_jwt_secret")
def token(config_file: str | None, sub: str, name: str, moderator: bool, ttl: int, private_key: str | None) -> None:
    """Print a signed token for --sub (with the serve options' key, audience and issuer)."""
    try:
        config = load(config_file)
    except ConfigError as e:
        raise click.ClickException(str(e)) from None
    key: Any
    if private_key is not None:
        with open(private_key, "rb") as fh:
            try:
                key = serialization.load_pem_private_key(fh.read(), password=None)
                algorithm = algorithm_of(key)
            except (ValueError, TypeError, TokenKeyError) as e:
                raise click.ClickException(f"--private-key {private_key}: {e}") from None
    elif config.auth_jwt_secret:
        key, algorithm = config.auth_jwt_secret.encode(), "HS256"
    else:
        raise click.ClickException("no signing key: set auth_jwt_secret (LIVECOMMENTS_AUTH_JWT_SECRET) or pass --private-key")
    click.echo(mint(key, algorithm, sub=sub, name=name, moderator=moderator, ttl=ttl,
                    audience=config.auth_jwt_audience, issuer=config.auth_jwt_issuer))
