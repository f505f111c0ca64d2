"""The dataset job on a running Dask distributed cluster (the `cluster` extra).

Each file is one task running `batch.worker.analyse_file`, the function the local pool runs. A worker plugin loads the
models when a worker starts (and again in a worker the nanny restarts), so each worker process loads them once. A
worker killed mid-file: the scheduler hands its tasks to another worker (up to `distributed.scheduler.allowed-failures`,
3 by default, then the file is reported failed with `KilledWorker`); the retried file replaces its parts
(`batch.dataset`), so the dataset holds it once.

The recordings, the config, the model folders it names and the dataset folder must be at the same paths on every
worker (shared storage, or copies at the same paths for the models).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import IO, Any

from soundmond.batch import job
from soundmond.batch.worker import FileOutcome, analyse_file, warm
from soundmond.errors import HintedError

EXTRA_HINT = "install the cluster extra on the driver and every worker: pip install 'soundmond[cluster]'"


class ClusterError(HintedError):
    """The cluster cannot be used: the extra is missing (`usage`), or the scheduler cannot be reached."""

    def __init__(self, problem: str, hint: str = "", *, usage: bool = False) -> None:
        super().__init__(problem, hint)
        self.usage = usage


def distributed() -> Any:
    try:
        import distributed
    except ImportError as exc:
        raise ClusterError("--cluster needs Dask distributed, which is not installed", EXTRA_HINT,
                           usage=True) from exc
    return distributed


def models_plugin(config: str | None) -> Any:
    """A Dask WorkerPlugin whose setup loads the models in the worker process."""
    base = distributed().WorkerPlugin

    class LoadModels(base):  # type: ignore[misc, valid-type]
        name = "soundmond-models"

        def setup(self, worker: Any) -> None:
            warm(config)

    return LoadModels()


def connect(address: str, timeout_s: float = 30.0) -> Any:
    d = distributed()
    try:
        return d.Client(address, timeout=timeout_s)
    except (OSError, TimeoutError, ValueError) as exc:
        raise ClusterError(f"cannot reach the Dask scheduler at {address} ({exc})",
                           "start one (`dask scheduler`, then `dask worker ADDRESS --nworkers N --nthreads 1` on "
                           "each machine) or give its address as tcp://host:8786") from exc


def worker_count(client: Any) -> int:
    return sum(w.get("nthreads", 1) for w in client.scheduler_info()["workers"].values())


def run_tasks(client: Any, spec: job.JobSpec) -> Iterator[FileOutcome]:
    """One task per file (no result cache: `pure=False`), outcomes as they finish; a task the cluster gave up on
    (its workers died, `KilledWorker`) is a failed file."""
    d = distributed()
    try:
        client.register_plugin(models_plugin(spec.config))
    except Exception as exc:  # the plugin's setup raised in a worker: the config is not there, or not the same
        raise ClusterError(f"the workers could not load the config {spec.config} ({exc})",
                           "put the config, and the model folders it names, at the same paths on every worker") from exc
    futures = {client.submit(analyse_file, path, spec.out, spec.config, spec.reanalyze, pure=False,
                             key=f"soundmond-file-{i}-{time.time_ns()}"): path
               for i, path in enumerate(spec.files)}
    for future in d.as_completed(futures):
        try:
            yield future.result()
        except Exception as exc:  # KilledWorker, a cancelled task: the file failed, the others go on
            yield FileOutcome(futures[future], "failed", worker="", error=f"{type(exc).__name__}: {exc}")
        finally:
            future.release()


def run_on_cluster(spec: job.JobSpec, archive: job.Archive, address: str, stream: IO[str] | None = None
                   ) -> job.Summary:
    client = connect(address)
    try:
        workers = worker_count(client)
        if workers == 0:
            raise ClusterError(f"the Dask scheduler at {address} has no workers",
                               "start workers with `dask worker ADDRESS --nthreads 1`")
        return job.run_job(spec, archive, lambda s: run_tasks(client, s), workers, stream)
    finally:
        client.close()
