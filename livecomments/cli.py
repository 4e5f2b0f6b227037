"""The `livecomments` command."""

from __future__ import annotations

from typing import Any

import click

from livecomments import __version__
from livecomments.config import BATCH_MODES, ROLES, STRATEGIES, Config, ConfigError, masked
from livecomments.config_layers import load, options

CHOICES = {"role": click.Choice(ROLES), "strategy": click.Choice(STRATEGIES), "batch_mode": click.Choice(BATCH_MODES)}
TYPES = {str: click.STRING, int: click.INT, float: click.FLOAT, tuple: click.STRING}  # tuple: comma-separated


def _config_options(func: Any) -> Any:
    """One flag per Config field; None means 'not given', so env and file still apply."""
    for name, typ, default, help_text in reversed(options()):
        flag = "--" + name.replace("_", "-")
        text = f"{help_text} [default: {default!r}]"
        if typ is bool:
            func = click.option(f"{flag}/--no-{flag[2:]}", name, default=None, help=text)(func)
        else:
            func = click.option(flag, name, type=CHOICES.get(name, TYPES[typ]), default=None, help=text)(func)
    return func


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, prog_name="livecomments")
def main() -> None:
    """livecomments: live comments on live video over Server-Sent Events.

    Every option of `serve` also comes from a TOML config file (--config or
    LIVECOMMENTS_CONFIG) and from LIVECOMMENTS_<OPTION> environment variables;
    flags win over the environment, the environment over the file.
    """


@main.command()
@click.option("--config", "config_file", type=click.Path(dir_okay=False), help="TOML config file (see config/livecomments.toml)")
@click.option("--print-config", is_flag=True, help="print the merged configuration as TOML and exit")
@_config_options
def serve(config_file: str | None, print_config: bool, **flags: Any) -> None:
    """Run a livecomments process (writer, realtime or both)."""
    try:
        config = load(config_file, flags=flags)
    except ConfigError as e:
        raise click.ClickException(str(e)) from None
    if print_config:
        click.echo(to_toml(config), nl=False)
        return
    from livecomments.edge.app import StartError, run
    from livecomments.ops.workers import supervise

    try:
        supervise(config) if config.workers > 1 else run(config)
    except StartError as e:  # a component that cannot start names itself
        raise click.ClickException(str(e)) from None
    except OSError as e:  # port in use
        raise click.ClickException(f"cannot start: {e}") from None


def to_toml(config: Config) -> str:
    lines = []
    for name, typ, _, _ in options():
        value = getattr(config, name)
        if typ is bool:
            lines.append(f"{name} = {'true' if value else 'false'}")
        elif typ is tuple:
            items = ", ".join('"' + item.replace("\\", "\\\\").replace('"', '\\"') + '"' for item in value)
            lines.append(f"{name} = [{items}]")
        elif typ is str:
            escaped = masked(name, value).replace("\\", "\\\\").replace('"', '\\"')
            lines.append(f'{name} = "{escaped}"')
        else:
            lines.append(f"{name} = {value!r}")
    return "\n".join(lines) + "\n"


def _add_commands() -> None:
    # Each of these modules owns one command; imported here, after `main` exists.
    from livecomments.benchmarks.command import bench
    from livecomments.benchmarks.simulate import simulate
    from livecomments.ops.cluster import cluster
    from livecomments.ops.lbconfig import lb_config
    from livecomments.ops.load import load
    from livecomments.ops.token import token

    for command in (lb_config, cluster, simulate, bench, token, load):
        main.add_command(command)


_add_commands()
