"""Prometheus metrics after real traffic: mail sent with smtplib through a real
``runmailservers`` process, a failed IMAP login, submission to remote
recipients delivered (and deferred) by a real Celery worker; then /metrics on
the web port, the listener metrics port and the worker metrics port, read
over HTTP with Prometheus' own text-format parser."""

from __future__ import annotations

import imaplib
import json
import multiprocessing
import os
import re
import signal
import smtplib
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.connection import Connection

import pytest
from prometheus_client import generate_latest
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.parser import text_string_to_metric_families

from apps.delivery.models import QueueEntry
from apps.directory.models import Mailbox
from apps.mailservers.tls import server_context
from apps.store.services import storage_summary
from apps.web.metrics import DatabaseCollector
from mailhost import metrics
from tests.conftest import ROOT, database_url
from tests.delivery.receiver import Receiver
from tests.delivery.test_worker import kill_group, start_worker
from tests.factories import PASSWORD, make_domain, make_mailbox
from tests.smtp.helpers import make_message
from tests.web_server import WebServerProcess, free_port

pytestmark = pytest.mark.slow

TOKEN = "scrape-token-for-tests"
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(url: str, *, token: str | None = None, wait: float = 0) -> Samples:
    """Every sample of a /metrics page, parsed as Prometheus parses it."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    deadline = time.monotonic() + wait
    while True:
        try:
            with urllib.request.urlopen(urllib.request.Request(url, headers=headers),  # noqa: S310
                                        timeout=10) as response:
                body = response.read().decode()
            break
        except (urllib.error.URLError, ConnectionError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    return {(sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(body) for sample in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float:
    """One sample's value; a labelled series nobody counted yet is 0."""
    return samples.get((name, frozenset(labels.items())), 0.0)


def total(samples: Samples, name: str) -> float:
    """A family's samples summed over their labels."""
    return sum(v for (sample, _), v in samples.items() if sample == name)


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def test_counters_move_by_the_traffic_sent(
    transactional_db, settings, tmp_path, monkeypatch, listener_process, client_tls_context,
) -> None:
    make_domain("ours.example")
    make_mailbox("alice@ours.example")
    receiver = Receiver(server_context()).start()
    receiver.script.rcpt["later@example.net"] = ["451 4.3.0 Try again later"] * 5
    worker_port, listener_port = free_port(), free_port()
    worker = start_worker(settings, receiver.port, tmp_path, "metrics",
                          MAILHOST_WORKER_METRICS_PORT=str(worker_port))
    monkeypatch.setenv("MAILHOST_METRICS_PORT", str(listener_port))
    # The three processes start side by side.
    with ThreadPoolExecutor(2) as pool:
        starting_web = pool.submit(WebServerProcess, database_url(), settings.MAILHOST_STORAGE_ROOT,
                                   env={"MAILHOST_METRICS_ALLOWED_NETWORKS": "192.0.2.0/24",
                                        "MAILHOST_METRICS_TOKEN": TOKEN})
        starting_listeners = pool.submit(listener_process, ["smtp", "submission", "imap"])
        web, listeners = starting_web.result(), starting_listeners.result()
    try:
        listener_url = f"http://127.0.0.1:{listener_port}/metrics"
        worker_url = f"http://127.0.0.1:{worker_port}/metrics"
        before = scrape(listener_url, wait=10)
        worker_before = scrape(worker_url, wait=60)

        # The web port answers only the networks allowed or the token.
        with pytest.raises(urllib.error.HTTPError) as refused:
            scrape(f"{web.url}/metrics")
        assert refused.value.code == 403

        with smtplib.SMTP("127.0.0.1", listeners.ports["smtp"]) as client:
            for number in range(3):
                client.sendmail("sender@remote.example", ["alice@ours.example"],
                                make_message("alice@ours.example", subject=f"n{number}"))

        imap = imaplib.IMAP4("127.0.0.1", listeners.ports["imap"])
        with pytest.raises(imaplib.IMAP4.error):
            imap.login("alice@ours.example", "not the password")
        during = scrape(listener_url)
        imap.logout()

        with smtplib.SMTP("127.0.0.1", listeners.ports["submission"]) as client:
            client.starttls(context=client_tls_context)
            client.login("alice@ours.example", PASSWORD)
            client.sendmail("alice@ours.example", ["bob@example.net", "later@example.net"],
                            make_message("bob@example.net").replace(
                                b"sender@remote.example", b"alice@ours.example"))
        wait_for(lambda: QueueEntry.objects.filter(recipient="later@example.net",
                                                   attempts__gte=1).exists()
                 and not QueueEntry.objects.filter(recipient="bob@example.net").exists(),
                 "the worker's first attempt")
        after = scrape(listener_url)
        worker_after = scrape(worker_url)
        web_samples = scrape(f"{web.url}/metrics", token=TOKEN)
    finally:
        kill_group(worker)
        web.stop()
        receiver.stop()

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    # The listener process: 3 received on the MX, filed (inline checks) and
    # judged once per mailbox, 1 submitted.
    assert moved("mailhost_messages_total", stage="received") == 3
    assert moved("mailhost_messages_total", stage="submitted") == 1
    assert moved("mailhost_messages_total", stage="filed") == 3
    assert (moved("mailhost_spam_verdicts_total", verdict="ham")
            + moved("mailhost_spam_verdicts_total", verdict="spam")) == 3
    assert moved("mailhost_messages_total", stage="junked") == moved(
        "mailhost_spam_verdicts_total", verdict="spam")
    filed_latencies = (total(after, "mailhost_filing_latency_seconds_count")
                       - total(before, "mailhost_filing_latency_seconds_count"))
    assert filed_latencies == 3
    # One MX session: greeting, EHLO, 3 x (MAIL, RCPT, end of data), QUIT;
    # and 3 x DATA's 354.
    assert moved("mailhost_smtp_replies_total", listener="smtp", code_class="2xx") == 12
    assert moved("mailhost_smtp_replies_total", listener="smtp", code_class="3xx") == 3
    assert moved("mailhost_smtp_replies_total", listener="smtp", code_class="5xx") == 0
    assert moved("mailhost_connections_total", protocol="smtp", listener="smtp") == 1
    assert moved("mailhost_connections_total", protocol="imap", listener="imap") == 1
    assert moved("mailhost_connections_total", protocol="smtp", listener="submission") == 1
    assert value(during, "mailhost_connections_open", protocol="imap", listener="imap") == (
        value(before, "mailhost_connections_open", protocol="imap", listener="imap") + 1)
    assert moved("mailhost_auth_failures_total", protocol="imap", reason="password") == 1

    # The worker: one recipient delivered at the first attempt, one deferred.
    def worker_moved(name: str, **labels: str) -> float:
        return value(worker_after, name, **labels) - value(worker_before, name, **labels)

    assert worker_moved("mailhost_messages_total", stage="sent") == 1
    assert worker_moved("mailhost_messages_total", stage="deferred") == 1
    assert worker_moved("mailhost_messages_total", stage="bounced") == 0
    assert worker_moved("mailhost_remote_delivery_latency_seconds_count", attempt="first") == 1

    # The web port: the database's figures at scrape time.
    assert value(web_samples, "mailhost_queue_messages") == 1
    assert value(web_samples, "mailhost_queue_recipients") == 1
    assert value(web_samples, "mailhost_queue_deferred_recipients") == 1
    assert value(web_samples, "mailhost_queue_oldest_age_seconds") > 0
    used = storage_summary(Mailbox.objects.all()).used
    assert used > 0
    assert value(web_samples, "mailhost_store_bytes") == used


def exported_names() -> set[str]:
    """Every sample name Mailhost exports: its instruments' and the web's
    database gauges."""
    suffixes = {"counter": ["_total"], "gauge": [""], "histogram": ["_bucket", "_count", "_sum"]}
    names = {f"{family.name}{suffix}"
             for instrument in vars(metrics).values() if isinstance(instrument, MetricWrapperBase)
             for family in instrument.describe() for suffix in suffixes[family.type]}
    return names | {family.name for family in DatabaseCollector().collect()}


def test_the_grafana_dashboard_reads_only_exported_metrics(db) -> None:
    dashboard = json.loads((ROOT / "contrib" / "grafana" / "mailhost.json").read_text())
    used = {name for panel in dashboard["panels"] for target in panel["targets"]
            for name in re.findall(r"\bmailhost_\w+", target["expr"])}
    assert used, "the dashboard has no queries"
    assert used <= exported_names(), used - exported_names()
    # Every instrument is on the dashboard in some form.
    bases = {re.sub(r"_(total|bucket|count|sum)$", "", name) for name in used}
    assert {re.sub(r"_(total|bucket|count|sum)$", "", name) for name in exported_names()} <= bases


def test_web_metrics_answer_loopback_by_default(client, db) -> None:
    """Django's test client comes from 127.0.0.1, which the default allows."""
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain; version=")
    names = {family.name for family in text_string_to_metric_families(response.content.decode())}
    assert {"mailhost_queue_messages", "mailhost_store_bytes"} <= names
    assert client.get("/metrics", REMOTE_ADDR="198.51.100.7").status_code == 403


def _supervise(directory: str, results: Connection) -> None:
    """What ``runmailservers`` does with MAILHOST_LISTENER_PROCESSES=2, in a
    forked process of its own: two children count a connection each; one
    dies and is reaped. Sends the sums seen before and after."""
    from django.conf import settings

    settings.MAILHOST_METRICS_DIR = directory
    metrics.use_directory("listeners")
    children = []
    for _ in range(2):
        pid = os.fork()
        if pid == 0:
            metrics.CONNECTIONS.labels("smtp", "smtp").inc()
            metrics.CONNECTIONS_OPEN.labels("smtp", "smtp").inc()
            time.sleep(60)
            os._exit(0)
        children.append(pid)

    def summed() -> tuple[float, float]:
        samples = {(s.name, s.labels.get("listener")): s.value for family in
                   text_string_to_metric_families(generate_latest(metrics.registry()).decode())
                   for s in family.samples}
        return (samples.get(("mailhost_connections_total", "smtp"), 0.0),
                samples.get(("mailhost_connections_open", "smtp"), 0.0))

    deadline = time.monotonic() + 30
    while summed() != (2, 2) and time.monotonic() < deadline:
        time.sleep(0.05)
    before = summed()
    os.kill(children[0], signal.SIGKILL)
    os.waitpid(children[0], 0)
    metrics.process_died(children[0])
    after = summed()
    os.kill(children[1], signal.SIGKILL)
    os.waitpid(children[1], 0)
    results.send((before, after))


def test_listener_children_are_summed_and_a_dead_ones_connections_close(tmp_path) -> None:
    receiving, sending = multiprocessing.Pipe(duplex=False)
    supervisor = multiprocessing.get_context("fork").Process(
        target=_supervise, args=(str(tmp_path), sending))
    supervisor.start()
    assert receiving.poll(60), "the supervisor sent nothing"
    before, after = receiving.recv()
    supervisor.join(30)
    assert before == (2, 2)
    # The dead child's connection is no longer open; what it counted stays.
    assert after == (2, 1)
