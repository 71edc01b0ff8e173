"""`desksync simulate`: a built-in simulator on 127.0.0.1, for trying desksync without an account."""

from __future__ import annotations

from typing import Any

import click


@click.command()
@click.option("--system", type=click.Choice(["eddydesk", "servicego", "udesk_knowledge"]), default="eddydesk",
              show_default=True)
@click.option("--port", default=8765, show_default=True)
@click.option("--tickets", default=2000, show_default=True)
@click.option("--users", default=300, show_default=True)
@click.option("--organizations", default=40, show_default=True)
@click.option("--articles", default=100, show_default=True)
@click.option("--records", default=10_000, show_default=True, help="ServiceGo: records over customer, contact, case.")
@click.option("--questions", default=2_000, show_default=True, help="Udesk knowledge: questions.")
@click.option("--seed", default=1, show_default=True)
@click.option("--latency", default=0.0, show_default=True, help="Seconds added to every answer.")
@click.option("--rate-limit", "rate_limit", default=300, show_default=True,
              help="Requests per minute (0: none). Udesk simulators: none unless given.")
@click.option("--minute-seconds", default=60.0, show_default=True, help="Length of the rate-limit minute.")
def simulate(system: str, port: int, tickets: int, users: int, organizations: int, articles: int, records: int,
             questions: int, seed: int, latency: float, rate_limit: int, minute_seconds: float) -> None:
    """Run a simulator on 127.0.0.1.

    EddyDesk: admin@example.com / sim-api-key. Udesk: admin@udesk.cn / the token of seed 000's
    example (221b368d7f5f597867f525971f28ff75).
    """
    if system != "eddydesk":
        _simulate_udesk(system, port, records, questions, seed, latency)
        return
    from etl.connectors.eddydesk.simulator.data import Sizes
    from etl.connectors.eddydesk.simulator.limits import Limits
    from etl.connectors.eddydesk.simulator.server import serve_forever

    limits = Limits(per_minute=rate_limit or None, knowledge_base_per_minute=(rate_limit // 5) or None,
                    minute_seconds=minute_seconds)
    sizes = Sizes(tickets=tickets, users=users, organizations=organizations, kb_articles=articles,
                  kb_categories=max(6, articles // 10))

    def ready(server: Any) -> None:
        click.echo(f"EddyDesk simulator listening on {server.url}", err=True)

    serve_forever(sizes, port, seed=seed, limits=limits, latency=latency, ready=ready)


def _simulate_udesk(system: str, port: int, records: int, questions: int, seed: int, latency: float) -> None:
    server: Any
    if system == "servicego":
        from etl.connectors.udesk.servicego.simulator.server import ServiceGoServer
        from etl.connectors.udesk.servicego.simulator.store import ServiceGoState
        from etl.connectors.udesk.servicego.simulator.store import Sizes as ServiceGoSizes

        sizes = ServiceGoSizes(customers=records // 10, contacts=records * 3 // 10,
                               cases=records - records // 10 - records * 3 // 10)
        server = ServiceGoServer(ServiceGoState(sizes, seed=seed), latency, port=port)
    else:
        from etl.connectors.udesk.knowledge.simulator.server import KnowledgeServer
        from etl.connectors.udesk.knowledge.simulator.store import KnowledgeState
        from etl.connectors.udesk.knowledge.simulator.store import Sizes as KnowledgeSizes

        server = KnowledgeServer(KnowledgeState(KnowledgeSizes(questions=questions), seed=seed), latency, port=port)
    click.echo(f"{system} simulator listening on {server.url}", err=True)
    server.run_forever()
