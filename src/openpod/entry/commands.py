"""Server-side commands: `openpod server`, `openpod node`, `openpod admin ...`, `openpod up`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from openpod.adapters.runtimes.base import Runtime
    from openpod.node.reconcile import LimitTable
    from openpod.settings import NodeSettings


def _logging(level: str) -> None:
    # asyncssh logs every channel request at INFO, before the gateway has decided on it.
    logging.getLogger("asyncssh").setLevel(
        max(logging.WARNING, logging.getLevelName(level.upper()))
    )
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def _given(**options: Any) -> dict[str, Any]:
    """The options given on the command line; the rest come from the environment or defaults."""
    return {name: value for name, value in options.items() if value is not None}


def server(
    host: Annotated[str | None, typer.Option(help="Address to listen on.")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on.")] = None,
    data_dir: Annotated[Path | None, typer.Option(help="Where the SQLite database lives.")] = None,
    database_url: Annotated[
        str | None, typer.Option(help="SQLAlchemy URL, e.g. postgresql://user@host/db.")
    ] = None,
    log_level: Annotated[str, typer.Option(help="debug, info, warning")] = "info",
) -> None:
    """Run the control plane (REST API, node channel). Settings also come from OPENPOD_* env."""
    import uvicorn

    from openpod.api.app import create_asgi
    from openpod.settings import ServerSettings

    settings = ServerSettings(
        **_given(host=host, port=port, data_dir=data_dir, database_url=database_url)
    )
    _logging(log_level)
    uvicorn.run(
        create_asgi(settings),
        host=settings.host,
        port=settings.port,
        log_level=log_level,
        access_log=log_level == "debug",
        ws_ping_interval=20,
        # Nodes' and meters' messages are small JSON: compressing each cost ~6% of the CPU
        # of metering (bench/metering.py) and saved nothing worth it.
        ws_per_message_deflate=False,
    )


def node(
    api_url: Annotated[str | None, typer.Option(help="The control plane's URL.")] = None,
    token: Annotated[
        str | None, typer.Option(help="Node token (or OPENPOD_NODE_TOKEN).", show_default=False)
    ] = None,
    gpus: Annotated[
        str | None,
        typer.Option(help='Declared GPUs when NVML finds none: "NVIDIA GeForce RTX 4090:2".'),
    ] = None,
    data_dir: Annotated[Path | None, typer.Option(help="Where pods live on this host.")] = None,
    public_host: Annotated[str | None, typer.Option(help="Address users reach pods at.")] = None,
    bind_host: Annotated[str | None, typer.Option(help="Address pod ports listen on.")] = None,
    runtime: Annotated[
        str | None,
        typer.Option(help="How pods run: local (processes), docker or kubernetes."),
    ] = None,
    log_level: Annotated[str, typer.Option(help="debug, info, warning")] = "info",
) -> None:
    """Run a provider node agent (local runtime unless --runtime docker|kubernetes)."""
    from pydantic import ValidationError

    from openpod.adapters.gpus import nvml
    from openpod.adapters.runtimes.base import RuntimeError_
    from openpod.domain.errors import InvalidGpuSpec
    from openpod.domain.gpus import parse_gpu_declaration
    from openpod.node.agent import NodeAgent, NodeAuthError
    from openpod.protocol import GpuInfo
    from openpod.settings import NodeSettings

    try:
        settings = NodeSettings(
            **_given(
                api_url=api_url,
                token=token,
                gpus=gpus,
                data_dir=data_dir,
                public_host=public_host,
                bind_host=bind_host,
                runtime=runtime,
            )
        )
    except ValidationError as error:
        wrong = "; ".join(f"{e['loc'][0]}: {e['msg']}" for e in error.errors() if e["loc"])
        raise typer.BadParameter(f"invalid node settings: {wrong}") from None
    _logging(log_level)
    if not settings.token:
        raise typer.BadParameter("a node token is needed: --token or OPENPOD_NODE_TOKEN")
    try:
        devices = (parse_gpu_declaration(settings.gpus) if settings.gpus else nvml.discover()) or ()
    except InvalidGpuSpec as error:
        raise typer.BadParameter(str(error), param_hint="'--gpus'") from None
    if not devices:
        typer.echo("warning: no GPUs found by NVML and none declared (--gpus)", err=True)
    limits = _limit_table(settings.pod_limits)
    try:
        node_runtime = _node_runtime(settings)
    except RuntimeError_ as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2) from None
    agent = NodeAgent(
        api_url=settings.api_url,
        token=settings.token,
        runtime=node_runtime,
        gpus=[GpuInfo(index=d.index, type=d.type, uuid=d.uuid) for d in devices],
        public_host=settings.public_host,
        stop_grace=settings.stop_grace_seconds,
        limits=limits,
    )
    try:
        asyncio.run(_until_signalled(agent.run()))
    except NodeAuthError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(4) from None
    except KeyboardInterrupt:
        pass
    finally:
        close = getattr(node_runtime, "close", None)
        if close is not None:  # its connections; the pods keep running
            close()


def _node_runtime(settings: NodeSettings) -> Runtime:
    if settings.runtime == "kubernetes":
        from openpod.adapters.runtimes.kubernetes import KubernetesConfig, KubernetesRuntime

        token = settings.kube_token.get_secret_value() if settings.kube_token else None
        return KubernetesRuntime(
            KubernetesConfig(
                server=settings.kube_server,
                token=token,
                ca_file=settings.kube_ca_file,
                kubeconfig=settings.kube_kubeconfig,
                context=settings.kube_context,
                service_account=settings.kube_service_account,
                namespace=settings.kube_namespace,
                gpu_type_label=settings.kube_gpu_type_label,
                storage_class=settings.kube_storage_class,
                workspace_size=settings.kube_workspace_size,
                meter_image=settings.kube_meter_image,
            )
        )
    if settings.runtime == "docker":
        from openpod.adapters.runtimes.docker import DockerRuntime

        return DockerRuntime(
            settings.data_dir,
            settings.docker_host,
            settings.bind_host,
            network=settings.docker_network,
            gpu_driver=settings.docker_gpu_driver,
            pull_missing=settings.docker_pull,
        )
    from openpod.adapters.runtimes.local import LocalRuntime

    return LocalRuntime(settings.data_dir, bind_host=settings.bind_host)


_LIMIT_KEYS = {"cpus", "memory_gib", "pids"}


def _limit_table(rows: dict[str, dict[str, float]]) -> LimitTable:
    """OPENPOD_NODE_POD_LIMITS as the agent's table; a wrong key or value is named."""
    from openpod.node.reconcile import PerGpuLimits

    table = {}
    for gpu_type, row in rows.items():
        unknown = set(row) - _LIMIT_KEYS
        if unknown:
            raise typer.BadParameter(
                f"pod limits for {gpu_type!r}: unknown {', '.join(sorted(unknown))} "
                f"(known: {', '.join(sorted(_LIMIT_KEYS))})"
            )
        if any(value <= 0 for value in row.values()):
            raise typer.BadParameter(f"pod limits for {gpu_type!r} must be above 0")
        memory = row.get("memory_gib")
        pids = row.get("pids")
        table[gpu_type] = PerGpuLimits(
            cpus=row.get("cpus"),
            memory_bytes=int(memory * 1024**3) if memory is not None else None,
            pids=int(pids) if pids is not None else None,
        )
    return table


async def _until_signalled(work: Coroutine[Any, Any, None]) -> None:
    """Run `work`; SIGTERM or SIGINT cancels it cleanly (pods keep running: they are adopted)."""
    task = asyncio.ensure_future(work)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, task.cancel)
    with contextlib.suppress(asyncio.CancelledError):
        await task


def gateway(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 2222,
    data_dir: Annotated[Path | None, typer.Option(help="The control plane's data dir.")] = None,
    database_url: Annotated[str | None, typer.Option(help="The control plane's database.")] = None,
    host_key: Annotated[
        Path | None, typer.Option(help="Host key file (made if missing; default in data dir).")
    ] = None,
    fast_port: Annotated[
        int | None,
        typer.Option(
            help="Also serve the fast path here (`openpod ssh` uses it; no second encryption)."
        ),
    ] = None,
    log_level: Annotated[str, typer.Option(help="debug, info, warning")] = "info",
) -> None:
    """Run the SSH gateway: `ssh -J openpod@HOST:PORT root@POD` reaches any pod you own."""
    from openpod.adapters.gateway.fastpath import FastPath
    from openpod.adapters.gateway.server import SSHGateway
    from openpod.adapters.store import Database, migrate
    from openpod.services.gateway_directory import StoreDirectory
    from openpod.settings import ServerSettings

    settings = ServerSettings(**_given(data_dir=data_dir, database_url=database_url))
    _logging(log_level)
    migrate(settings.db_url())
    db = Database(settings.db_url())
    key_path = host_key or settings.data_dir / "gateway_host_key"

    async def serve() -> None:
        directory = StoreDirectory(db)
        server = SSHGateway(directory, key_path, host=host, port=port)
        fast = FastPath(directory, host=host, port=fast_port) if fast_port is not None else None
        await server.start()
        if fast is not None:
            await fast.start()
        public = key_path.with_name(key_path.name + ".pub")
        public.write_text(server.host_public_key + "\n")
        logging.getLogger("openpod.gateway").info("SSH gateway on %s:%d", host, server.port)
        try:
            await asyncio.Event().wait()
        finally:
            if fast is not None:
                await fast.stop()
            await server.stop()

    try:
        asyncio.run(_until_signalled(serve()))
    finally:
        db.dispose()


def edge(
    state_dir: Annotated[
        Path | None, typer.Option(help="HAProxy's files (default: DATA_DIR/edge).")
    ] = None,
    data_dir: Annotated[Path | None, typer.Option(help="The control plane's data dir.")] = None,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="HTTP port.")] = 8480,
    domain: Annotated[
        str | None, typer.Option(help="Proxy domain (default: OPENPOD_PROXY_DOMAIN).")
    ] = None,
    https_port: Annotated[int | None, typer.Option(help="HTTPS port (with --certificate).")] = None,
    certificate: Annotated[
        Path | None, typer.Option(help="PEM with the cert and key for *.DOMAIN.")
    ] = None,
    idle_timeout: Annotated[
        float, typer.Option(help="Seconds a connection may stay idle (streams: no cap).")
    ] = 3600.0,
    log_level: Annotated[str, typer.Option(help="debug, info, warning")] = "info",
) -> None:
    """Run and supervise the edge proxy (HAProxy): restarted at once if it dies, with every
    route (they are in its map file; the control plane changes them at runtime)."""
    from openpod.adapters.edge import EdgeError, EdgeProxy, EdgeSettings
    from openpod.settings import ServerSettings

    settings = ServerSettings(**_given(data_dir=data_dir, proxy_domain=domain))
    _logging(log_level)
    log = logging.getLogger("openpod.edge")
    proxy = EdgeProxy(
        EdgeSettings(
            state_dir=state_dir or settings.data_dir / "edge",
            http_port=port,
            bind_host=host,
            https_port=https_port,
            certificate=certificate,
            domain=settings.proxy_domain,
            client_timeout=idle_timeout,
            server_timeout=idle_timeout,
        )
    )

    async def supervise() -> None:
        try:
            while True:
                if not proxy.alive():
                    await asyncio.to_thread(proxy.start)
                    log.info("edge proxy (HAProxy) serving on %s:%d, pid %s", host, port, proxy.pid)
                await asyncio.sleep(0.2)
        finally:
            proxy.stop()

    try:
        asyncio.run(_until_signalled(supervise()))
    except EdgeError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(1) from None


admin = typer.Typer(help="Operator commands that act on the control plane's database directly.")


@admin.command("create-account")
def create_account(
    name: str,
    is_admin: Annotated[bool, typer.Option("--admin", help="Make it an admin.")] = False,
    data_dir: Annotated[Path | None, typer.Option()] = None,
    database_url: Annotated[str | None, typer.Option()] = None,
) -> None:
    """Create an account and print its API key (shown once)."""
    from openpod.adapters.store import Database, migrate
    from openpod.services import accounts
    from openpod.settings import ServerSettings

    settings = ServerSettings(**_given(data_dir=data_dir, database_url=database_url))
    migrate(settings.db_url())
    db = Database(settings.db_url())
    with db.transaction() as session:
        account, key = accounts.create_account(session, name, is_admin=is_admin)
    db.dispose()
    typer.echo(f"account {account.id} ({'admin' if is_admin else 'user'})")
    typer.echo(f"api key: {key}")


@admin.command("credit")
def credit(
    account_id: str,
    amount: Annotated[int, typer.Argument(help="Token base units to add.")],
    data_dir: Annotated[Path | None, typer.Option()] = None,
    database_url: Annotated[str | None, typer.Option()] = None,
) -> None:
    """Add funds to an account's balance (the database-backed funds guard)."""
    from openpod.adapters.store import Database, migrate
    from openpod.services import funds
    from openpod.services.errors import ServiceError
    from openpod.settings import ServerSettings

    settings = ServerSettings(**_given(data_dir=data_dir, database_url=database_url))
    migrate(settings.db_url())
    db = Database(settings.db_url())
    try:
        with db.transaction() as session:
            account = funds.credit(session, account_id, amount)
            balance = account.balance
    except ServiceError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(1) from None
    finally:
        db.dispose()
    typer.echo(f"account {account_id}: balance {balance} base units")


def up(
    data_dir: Annotated[Path, typer.Option(help="Where the dev platform keeps its state.")] = Path(
        ".openpod"
    ),
    port: Annotated[int, typer.Option(help="Control plane port.")] = 8420,
    gpus: Annotated[
        str, typer.Option(help="GPUs the local node declares when NVML finds none.")
    ] = ("NVIDIA GeForce RTX 4090:4,NVIDIA H100 80GB HBM3:2"),
) -> None:
    """Run the whole platform on this machine (control plane + one local node) until Ctrl-C."""
    from openpod.entry.devstack import run_devstack

    raise typer.Exit(run_devstack(data_dir.resolve(), port, gpus))


def meter(ctx: typer.Context) -> None:
    """Meter one pod run beside its workload (started by the node's runtime).

    `openpod meter --help` lists its options; the console script runs it without the CLI."""
    from openpod.meter.main import main as run_meter

    raise typer.Exit(run_meter(ctx.args))


def register(app: typer.Typer) -> None:
    app.command("server")(server)
    app.command("node")(node)
    app.command("up")(up)
    app.command("gateway")(gateway)
    app.command("edge")(edge)
    app.command(
        "meter",
        context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
        add_help_option=False,
    )(meter)
    app.add_typer(admin, name="admin")
    from openpod.entry import chain  # its adapters load lazily, in the commands

    app.add_typer(chain.app, name="chain")
    # The operator's hot wallet beside the user's own wallet commands: `openpod wallet hot
    # ...`, `openpod wallet breaker ...` (typer builds the groups at app() time).
    from openpod.cli import wallet as user_wallet
    from openpod.entry import hot_wallet

    user_wallet.app.add_typer(hot_wallet.hot, name="hot")
    user_wallet.app.add_typer(hot_wallet.breaker, name="breaker")
