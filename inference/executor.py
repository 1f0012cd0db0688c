"""Scale-out of many independent fits over processes with Dask distributed.

NumPyro is not thread-safe, so each worker is a process with one thread. ``workers=1`` with no
scheduler runs in this process (no Dask at all); ``workers > 1`` starts an embedded
``LocalCluster`` (spawned processes); ``scheduler="tcp://host:port"`` uses an existing cluster.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from bayesmtl.inference.runtime import quiet
from tqdm.auto import tqdm

__all__ = ["map_processes"]


def _call_in_worker(fn: Callable, item: Any):
    # Workers are fresh processes: force the CPU and the compilation cache before JAX runs.
    from bayesmtl.inference.runtime import configure

    configure(host_devices=1)
    return fn(item)


def map_processes(
    fn: Callable,
    items: Sequence,
    *,
    workers: int = 1,
    scheduler: str | None = None,
    progress_bar: bool | None = None,
    desc: str = "tasks",
) -> list:
    """``[fn(item) for item in items]``, spread over processes.

    Parameters
    ----------
    fn : callable
        A picklable function (cloudpickle: module-level functions and closures over picklable
        values work).
    items : sequence
    workers : int
        Local worker processes (ignored when ``scheduler`` is given). ``1`` runs in-process.
    scheduler : str, optional
        Address of an existing Dask scheduler (``tcp://host:port``).
    progress_bar : bool, optional
        Defaults to on, off when ``CI`` is set.
    desc : str
        Progress bar label.

    Returns
    -------
    list
        Results in the order of ``items``.

    Examples
    --------
    >>> map_processes(abs, [-1, 2, -3])
    [1, 2, 3]
    """
    if not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers: expected a positive integer, got {workers!r}")
    if scheduler is not None and not (isinstance(scheduler, str) and "://" in scheduler):
        raise ValueError(f"scheduler: expected an address like tcp://host:8786, got {scheduler!r}")
    show = (not quiet()) if progress_bar is None else progress_bar
    items = list(items)
    if workers == 1 and scheduler is None:
        return [fn(it) for it in tqdm(items, desc=desc, disable=not show)]
    import dask
    from distributed import Client, LocalCluster, as_completed

    cluster = None
    if scheduler is None:
        with dask.config.set({"distributed.worker.multiprocessing-method": "spawn"}):
            cluster = LocalCluster(
                n_workers=workers, threads_per_worker=1, processes=True,
                dashboard_address=":0", silence_logs=40,
            )
        client = Client(cluster)
    else:
        client = Client(scheduler)
    try:
        futures = [client.submit(_call_in_worker, fn, it, pure=False) for it in items]
        order = {f.key: i for i, f in enumerate(futures)}
        out: list = [None] * len(items)
        bar = tqdm(total=len(items), desc=desc, disable=not show)
        for fut in as_completed(futures):
            out[order[fut.key]] = fut.result()
            bar.update(1)
        bar.close()
        return out
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
