"""Runs on a real Dask cluster (a LocalCluster of 2 worker processes, 1 thread each) against real
HTTP servers: one rate limit for the cluster, the kernel's cache first, every worker's calls on
the driver's listeners, the API key nowhere in Dask, a killed worker and an Interrupt."""

from __future__ import annotations

import asyncio
import os
import pickle
import signal
import time

import pytest

distributed = pytest.importorskip("distributed")

from llmnb import Models, Timeline, listen  # noqa: E402
from llmnb.demo_server import REPLY, DemoServer, RateLimit  # noqa: E402
from llmnb.errors import ConfigError  # noqa: E402
from llmnb.runs import Results, Run, Task, TaskError  # noqa: E402
from llmnb.runs.cluster import Cluster, ClusterLost, close_clients  # noqa: E402
from llmnb.runs.cluster_worker import Secret  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]
KEY = "sk-cluster-test-9f8e7d6c5b4a"  # a key that must not leak into Dask


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0")
    client = distributed.Client(cluster)
    try:
        client.wait_for_workers(2, timeout=60)
        yield client
    finally:
        client.close()
        cluster.close()


def execute(run: Run, executor: Cluster, **options):
    """Run on the cluster with a fresh event loop, closing llmnb's client of that loop after."""

    async def main():
        try:
            return await run.execute_async(executor, **options)
        finally:
            await close_clients()

    return asyncio.run(main())


def test_600_rows_share_one_rate_limit_and_a_rerun_sends_nothing(client, tmp_path):
    """2 workers, rpm=2700 shared, against a server allowing 50 requests a second: at most 1% of
    429s, both workers call, every worker's events reach the driver, the key stays out of Dask."""
    with DemoServer(latency=0.05, rate_limit=RateLimit(requests=50)) as server:
        model = Models.create("openai:demo", base_url=server.base_url, api_key=KEY, rpm=2700,
                              cache=str(tmp_path / "answers.sqlite"))
        run = Run.for_each(model, [Task("say", "generate", "Say hello to {x}")], list(range(600)), name="x")
        seen = []
        cluster = Cluster(client)
        with Timeline(display=False) as timeline, listen(seen.append):
            results = execute(run, cluster)
        sent = server.requests
        assert results.as_list() == [REPLY] * 600 and not results.errors
        assert server.rate_limit.rejected <= 6, f"{server.rate_limit.rejected} answers of 429"
        assert len(cluster.workers) == 2 and all(n > 100 for n in cluster.workers.values())
        finished = [e for e in seen if e.kind == "finished" and e.parent is None]
        assert len(finished) == 600 and {e.worker for e in finished} == set(cluster.workers)
        assert len({e.call_id for e in finished}) == 600
        assert len(model.cache) == 600  # every turn kept by the driver
        # one picture: every worker's calls on the driver's timeline, a strip per worker
        assert {r["worker"] for r in timeline.records()} == set(cluster.workers)
        assert timeline.summary()["workers"] == 2 and "600 tasks on 2 workers" in timeline.to_text()
        assert all(f"in flight on {w}"[:38] in timeline.to_text() for w in cluster.workers)
        assert timeline.to_svg().count('data-name="running"') == 3  # the run's, and one per worker

        again = execute(run, Cluster(client))  # the cache answers all: nothing leaves
        assert again.as_list() == results.as_list() and server.requests == sent
    assert_key_nowhere(client)


def assert_key_nowhere(client) -> None:
    logs = [client.get_scheduler_logs(n=10_000), *client.get_worker_logs(n=10_000).values()]
    assert all(KEY not in message for log in logs for _, message in log)
    assert KEY not in repr(client.get_events())
    assert all(KEY not in str(key) for key in client.who_has())
    secret = Secret(KEY)
    assert KEY not in repr(secret) and KEY not in str(secret) and KEY not in f"{[secret]}"
    assert pickle.loads(pickle.dumps(secret)).reveal() == KEY


def test_only_what_the_cache_lacks_leaves_the_kernel(client, tmp_path):
    with DemoServer(latency=0.05) as server:
        model = Models.create("openai:demo", base_url=server.base_url, cache=str(tmp_path / "answers.sqlite"))
        task = Task("say", "generate", "Say hello to {x}")
        execute(Run.for_each(model, [task], list(range(0, 40, 2)), name="x"), Cluster(client))
        sent = server.requests
        seen = []
        with listen(seen.append):
            results = execute(Run.for_each(model, [task], list(range(40)), name="x"), Cluster(client))
        assert server.requests - sent == 20 and results.as_list() == [REPLY] * 40 and not results.cancelled
        assert results.order == [f"say_{i}" for i in range(1, 41)]
        finished = [e for e in seen if e.kind == "finished"]
        assert sum(e.cached and e.worker is None for e in finished) == 20  # answered here, from the cache
        assert sum(not e.cached and e.worker is not None for e in finished) == 20


def test_embedded_model_on_the_workers(client):
    model = Models.create("smollm2")
    labels = ["spam", "ham"]
    texts = ["WIN A FREE PHONE NOW", "Lunch at noon?", "Cheap pills online", "See you at the meeting"]
    run = Run.for_each(model, [Task("label", "classify", "Spam or ham? {t}", target=labels,
                                    options={"max_tokens": 8})], texts, name="t")
    seen = []
    with listen(seen.append):
        results = execute(run, Cluster(client, chunk=1))
    assert results.order == [f"label_{i}" for i in range(1, 5)] and sorted(results) == results.order
    assert all(value in labels or isinstance(value, TaskError) for value in results.as_list())
    assert {e.worker for e in seen if e.kind == "finished"} <= set(client.nthreads())


def test_an_interrupt_stops_the_clusters_calls(client):
    with DemoServer(latency=0.5) as server:
        model = Models.create("openai:demo", base_url=server.base_url)
        run = Run.for_each(model, [Task("g", "generate", "call {x}")], list(range(400)), name="x",
                           max_concurrency=8)
        results = None

        async def main():
            nonlocal results
            results = Results()
            job = asyncio.ensure_future(run.execute_async(Cluster(client, chunk=4), results=results))
            while len(results) < 8:
                await asyncio.sleep(0.05)
            job.cancel()
            with pytest.raises(asyncio.CancelledError):
                await job
            await close_clients()

        asyncio.run(main())
        time.sleep(1.0)  # what was in flight ends
        after = server.requests
        time.sleep(1.5)
        assert server.requests == after, "the workers kept calling after the Interrupt"
        assert after < 100 and results.cancelled and len(results) + len(results.cancelled) == 400
        assert not [k for k in client.processing().values() if k]  # no task of the run left running


def test_a_killed_worker_loses_no_row(client):
    """SIGKILL a worker mid-run: its chunk runs again elsewhere; only its calls in flight are sent twice."""
    with DemoServer(latency=0.3) as server:
        model = Models.create("openai:demo", base_url=server.base_url)
        run = Run.for_each(model, [Task("g", "generate", "call {x}")], list(range(120)), name="x",
                           max_concurrency=4)
        pids = client.run(os.getpid)
        killed = []

        def kill_once(done) -> None:
            if not killed and done.began is not None:
                victim = next(iter(pids.values()))
                os.kill(victim, signal.SIGKILL)
                killed.append(victim)

        results = execute(run, Cluster(client, chunk=4), on_result=kill_once)
        assert killed and results.as_list() == [REPLY] * 120 and not results.errors
        assert server.requests <= 120 + 8, f"{server.requests - 120} calls sent twice"
    client.wait_for_workers(2, timeout=60)  # the nanny restarts it


def test_a_lost_scheduler_is_a_clear_error_and_keeps_the_results():
    cluster = distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=":0")
    try:
        with DemoServer(latency=0.3) as server:
            model = Models.create("openai:demo", base_url=server.base_url)
            run = Run.for_each(model, [Task("g", "generate", "call {x}")], list(range(200)), name="x",
                               max_concurrency=4)
            results = Results()

            async def main():
                job = asyncio.ensure_future(run.execute_async(Cluster(cluster.scheduler_address, chunk=4),
                                                              results=results))
                while len(results) < 8:
                    await asyncio.sleep(0.05)
                cluster.sync(cluster.scheduler.close)
                with pytest.raises(ClusterLost, match="lost the Dask scheduler at tcp://"):
                    await asyncio.wait_for(job, 60)

            asyncio.run(main())
        assert sum(value == REPLY for value in results.values()) >= 8
        assert len(results) + len(results.cancelled) == 200
    finally:
        cluster.close()


def test_a_scheduler_refusing_plugins_leaves_each_worker_its_own_limits():
    """A scheduler that blocks plugins (or lacks llmnb) cannot hold the shared limit: a warning,
    and the run goes on with each worker keeping the model's limits."""
    cluster = distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=":0",
                                       scheduler_kwargs={"blocked_handlers": ["register_scheduler_plugin"]})
    try:
        with DemoServer(latency=0.05) as server:
            model = Models.create("openai:demo", base_url=server.base_url, rpm=1200)
            run = Run.for_each(model, [Task("g", "generate", "call {x}")], list(range(20)), name="x")
            with pytest.warns(RuntimeWarning, match="cannot hold llmnb's shared rate limits"):
                results = execute(run, Cluster(cluster.scheduler_address))
        assert results.as_list() == [REPLY] * 20
    finally:
        cluster.close()


def test_bad_options():
    with pytest.raises(ConfigError, match="chunk must be"):
        Cluster("tcp://127.0.0.1:1", chunk=0)
    assert repr(Cluster("tcp://127.0.0.1:8786")) == "Cluster(tcp://127.0.0.1:8786)"
