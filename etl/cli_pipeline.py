"""`desksync pipeline run|list|status`."""

from __future__ import annotations

import json
import sys

import click

from etl.cli_support import fail, load
from etl.core.errors import DesksyncError
from etl.core.run import jobs


@click.group()
def pipeline() -> None:
    """Cross-system pipelines ([pipelines.NAME] in the configuration)."""


@pipeline.command("run")
@click.argument("name")
@click.option("--dry-run", is_flag=True, help="Stage every step, print what would be written, send nothing.")
@click.option("--retry-failed", is_flag=True, help="Send target rows an earlier push held again (after fixing them).")
@click.pass_context
def pipeline_run(ctx: click.Context, name: str, dry_run: bool, retry_failed: bool) -> None:
    """Write the records changed since the last run into the target, step by step."""
    config = load(ctx)
    try:
        summary = jobs.run_pipeline(config, name, dry_run=dry_run, retry_failed=retry_failed)
    except DesksyncError as exc:
        fail(exc)
    verb = "would write" if dry_run else "staged"
    for step in summary.steps:
        click.echo(f"{step.step} -> {step.target}: {verb} {step.created} creates, {step.updated} updates, "
                   f"{step.deleted} deletes; {step.unchanged} unchanged"
                   + (f", {step.skipped} skipped" if step.skipped else ""))
        if step.push is not None:
            click.echo(f"  sent {step.push.sent}: {step.push.ok} ok, {step.push.failed} held by the target "
                       "(desksync status lists them)")
        for source_id, ancestor in step.folded:
            click.echo(f"  folded: {source_id} is deeper than the target allows; it goes into {ancestor}")
        for source_id, why in step.held:
            click.echo(f"  held: {source_id}: {why}")
    if not dry_run:
        click.echo(f"{summary.requests} requests")
    sys.exit(1 if summary.held and not dry_run else 0)


@pipeline.command("list")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def pipeline_list(ctx: click.Context, as_json: bool) -> None:
    """The configured pipelines: source, target and steps."""
    config = load(ctx)
    listed = {name: {"source": p.source, "target": p.target, "steps": [s.name for s in p.steps]}
              for name, p in config.pipelines.items()}
    if as_json:
        click.echo(json.dumps(listed, indent=2))
        return
    if not listed:
        click.echo("no pipelines configured ([pipelines.NAME] in the configuration)")
    for name, info in listed.items():
        click.echo(f"{name}: {info['source']} -> {info['target']} ({', '.join(info['steps'])})")


@pipeline.command("status")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def pipeline_status(ctx: click.Context, name: str, as_json: bool) -> None:
    """The id map per step: records linked, waiting for the target's push, folded, held."""
    config = load(ctx)
    try:
        report = jobs.pipeline_status(config, name)
    except DesksyncError as exc:
        fail(exc)
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    for step, info in report.items():
        click.echo(f"{step}: {info['linked']} linked, {info['waiting_for_push']} waiting for the push, "
                   f"{len(info['folded'])} folded, {len(info['held'])} held")
        for source_id, why in info["held"].items():
            click.echo(f"  held: {source_id}: {why}")
