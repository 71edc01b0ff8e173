"""The Celery app both sides use: the scheduler sends jobs with it, `desksync worker` consumes them.

Celery with a Redis broker, as data teams already run it (Airflow's CeleryExecutor is the same
pair). What its settings buy:
- `task_acks_late` + `task_reject_on_worker_lost`: a task is acknowledged only once its job has
  run, so a worker that dies mid-job leaves the message to the broker, which hands it to another
  worker (Redis: once `visibility_timeout` has passed since the delivery).
- `worker_prefetch_multiplier = 1`: a worker reserves no more tasks than it runs at once; a
  second worker takes the rest instead of their waiting behind a long backfill.
- JSON only: a task carries two strings (the job's name and its task id), never code.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from etl.core.config import ExecutorConfig
from etl.core.errors import DesksyncError
from etl.core.log import register_secret, scrub_text

if TYPE_CHECKING:
    from celery import Celery

TASK = "desksync.run_job"


def broker_url(executor: ExecutorConfig) -> str:
    """The broker's URL from the environment; its password is masked in every log line."""
    url = executor.broker_url()
    with contextlib.suppress(ValueError):  # not a URL: Celery's own error names the problem
        register_secret(urlsplit(url).password)
    return url


def celery_app(executor: ExecutorConfig) -> Celery:
    from celery import Celery

    app = Celery("desksync", broker=broker_url(executor), set_as_current=False)
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_default_queue=executor.queue,
        task_ignore_result=True,
        task_serializer="json",
        accept_content=["json"],
        enable_utc=True,
        broker_connection_retry_on_startup=True,
        broker_transport_options={
            "visibility_timeout": executor.visibility_timeout_seconds,
            "unacked_restore_interval": executor.restore_interval_seconds,
            "unacked_restore_throttle": 1,  # each sweep really looks (kombu's default: every tenth)
        },
        worker_hijack_root_logger=False,
        worker_redirect_stdouts=False,
        worker_send_task_events=False,
        worker_enable_remote_control=False,
    )
    return app


def check_broker(app: Celery, executor: ExecutorConfig) -> None:
    """Refuse to start without the broker, naming it by its variable (never by its password): a
    supervisor (systemd's Restart=) starts the process again, where Celery would retry silently."""
    try:
        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=2, interval_start=0.2, interval_step=0.5)
    except Exception as exc:  # noqa: BLE001 - kombu raises the transport's own errors
        raise DesksyncError(f"executor: the broker ({executor.broker_url_env}) cannot be reached: "
                            f"{scrub_text(str(exc))}") from None
