"""`guardian serve`: listen first, then build the guardian and run its HTTP API and scheduler."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from guardian.cli.console import EXIT_ERROR, err
from guardian.cli.root import app
from guardian.errors import RuleError


def _listen(host: str, port: int) -> Any:
    """Bind and listen on host:port before anything starts, so a taken port is said plainly (exit 2) and
    "ready" is never logged by a guardian that cannot listen. Returns the listening socket."""
    import errno
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does: a TIME_WAIT port is reusable
    change = ("choose another with --port, GUARDIAN_PORT or `port:` in the --config file"
              if port else "see --host / GUARDIAN_HOST")
    try:
        sock.bind((host, port))
        sock.listen(2048)  # connections made while the guardian starts wait in the backlog
    except OSError as e:
        sock.close()
        if e.errno == errno.EADDRINUSE:
            why = (f"port {port} on {host} is already in use (another guardian serve, or another program: "
                   f"`ss -ltnp 'sport = :{port}'` shows which); stop it, or {change}")
        elif e.errno == errno.EACCES:
            why = f"not allowed to listen on port {port} on {host} (ports below 1024 need privileges); {change}"
        elif e.errno in (errno.EADDRNOTAVAIL, socket.EAI_NONAME) or isinstance(e, socket.gaierror):
            why = (f"cannot listen on {host}: not an address of this machine; set another with --host, "
                   "GUARDIAN_HOST or `host:` in the --config file")
        else:
            why = f"cannot listen on {host}:{port}: {e.strerror or e}"
        err.print("[red]not started:[/red] ", end="")
        err.print(why, markup=False)
        raise typer.Exit(EXIT_ERROR) from None
    return sock


@app.command()
def serve(
    config: Annotated[Path | None, typer.Option("--config", "-c", show_default="none",
                                                help="YAML settings file (every setting; see guardian/settings.py)")]
    = None,
    host: Annotated[str | None, typer.Option(show_default="127.0.0.1",
                                             help="listen address; also GUARDIAN_HOST or `host:` in the config")]
    = None,
    port: Annotated[int | None, typer.Option(show_default="8080",
                                             help="listen port; also GUARDIAN_PORT or `port:` in the config")] = None,
    prometheus_url: Annotated[str | None, typer.Option(show_default="http://127.0.0.1:9090",
                                                       help="Prometheus base URL; also GUARDIAN_PROMETHEUS_URL")]
    = None,
    rules: Annotated[list[str] | None, typer.Option("--rules", show_default="rules",
                                                    help="rule file or folder (repeatable); also GUARDIAN_RULES")]
    = None,
    db_path: Annotated[str | None, typer.Option(show_default="var/guardian.db",
                                                help="SQLite state file; also GUARDIAN_DB_PATH")] = None,
) -> None:
    """Run the guardian: HTTP API, scheduler and rule reloading.

    It listens first: a port in use, invalid settings or invalid rules stop it before anything starts, with
    exit 2 and what to change. Options override the `--config` file and `GUARDIAN_*` variables.

    **Examples**

        guardian serve --prometheus-url http://127.0.0.1:9090 --rules rules/
        GUARDIAN_TOKEN=$(cat token) guardian serve --host 0.0.0.0 --port 8080
        guardian serve --config guardian.yaml
    """
    import uvicorn

    from guardian.api.app import create_app
    from guardian.api.components import build
    from guardian.redact import configure_logging
    from guardian.settings import load_settings

    try:
        settings = load_settings(config, host=host, port=port, prometheus_url=prometheus_url, rules=rules,
                                 db_path=db_path)
    except RuleError as e:
        for p in e.problems:
            err.print(str(p), markup=False)
        err.print("[red]not started:[/red] fix the problems above")
        raise typer.Exit(EXIT_ERROR) from None
    sock = _listen(settings.host, settings.port)  # before anything is built, started or logged as ready
    try:
        configure_logging(settings)  # at log_level, secrets redacted (guardian/redact.py)
        components = build(settings)
    except RuleError as e:
        sock.close()
        for p in e.problems:
            err.print(str(p), markup=False)
        err.print("[red]not started:[/red] fix the problems above")
        raise typer.Exit(EXIT_ERROR) from None
    from loguru import logger

    bound_host, bound_port = sock.getsockname()[:2]
    scheme = "https" if settings.tls_certfile else "http"
    logger.info("listening on {}://{}:{}", scheme, f"[{bound_host}]" if ":" in bound_host else bound_host, bound_port)
    server = uvicorn.Server(uvicorn.Config(  # HTTPS when both TLS files are set
        create_app(components), host=settings.host, port=bound_port, log_level="warning",
        ssl_certfile=settings.tls_certfile, ssl_keyfile=settings.tls_keyfile))
    try:
        server.run(sockets=[sock])
    except SystemExit as e:  # uvicorn's startup failure (its exit 3, which is "paused" here): say so, exit 2
        if e.code in (0, None):
            raise
        err.print("[red]not started:[/red] the guardian failed while starting (see the log above)")
        raise typer.Exit(EXIT_ERROR) from None
    finally:
        sock.close()

