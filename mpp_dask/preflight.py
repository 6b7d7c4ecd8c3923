"""Check, before a run, that a remote cluster runs this client's software.

Task graphs carry pickled pandas, pyarrow and mpp-dask objects, which the
scheduler unpickles and the workers run, so a scheduler or worker with other
versions fails late and obscurely, or computes something else. The check runs
:func:`mpp_dask.worker_probe.collect_versions` on the scheduler and on each worker
(``Client.run_on_scheduler``, ``Client.run``) and compares the results with the
same probe run here.
"""

from __future__ import annotations

import logging
from collections import defaultdict

import cloudpickle
from distributed import Client

from mpp_dask import worker_probe
from mpp_dask.errors import ClusterError

logger = logging.getLogger(__name__)

SKIP_HINT = "or skip this check with the setting mpp-dask.cluster.preflight: false"


def find_mismatches(client_report: dict, worker_reports: dict[str, object]) -> list[str]:
    """Return one line per difference between the client's report and the workers'.

    Parameters
    ----------
    client_report : dict
        The result of :func:`~mpp_dask.worker_probe.collect_versions` on the client.
    worker_reports : dict
        Worker address (or ``scheduler``) to its report, or to the exception the
        probe raised there.
    """
    problems: list[str] = []
    # (package, worker version) -> worker addresses, so that a cluster of identical
    # workers produces one line per package.
    differing: dict[tuple[str, str], list[str]] = defaultdict(list)
    for address, report in sorted(worker_reports.items()):
        if not isinstance(report, dict):
            problems.append(f"the version check failed on {address}: "
                            f"{type(report).__name__}: {report}")
            continue
        for distribution, error in report["errors"].items():
            problems.append(f"{distribution} does not import on {address}: {error}")
        if report["python"] != client_report["python"]:
            differing[("Python", report["python"])].append(address)
        for distribution, version in report["versions"].items():
            if distribution in report["errors"]:
                continue
            if version != client_report["versions"].get(distribution):
                differing[(distribution, version)].append(address)

    for (package, version), addresses in sorted(differing.items()):
        expected = (client_report["python"] if package == "Python"
                    else client_report["versions"].get(package))
        problems.append(f"{package} {version} on {', '.join(addresses)}; "
                        f"this client has {expected}")
    return problems


def _install_hint(client_report: dict) -> str:
    pins = " ".join(f"{name}=={version}" for name, version in client_report["versions"].items())
    return (f"Install this client's versions on the scheduler and every worker "
            f"(pip install {pins}), {SKIP_HINT}.")


def _run_on_scheduler(client: Client) -> object:
    try:
        return client.run_on_scheduler(worker_probe.collect_versions)
    except Exception as exc:  # reported like a worker's failure
        return exc


def check_workers(client: Client) -> None:
    """Compare the package versions of the scheduler and every worker with this client's.

    Raises
    ------
    ClusterError
        Listing each package whose version differs, with the scheduler or workers
        concerned, and each one where a package (such as mpp-dask) does not import.
    """
    cloudpickle.register_pickle_by_value(worker_probe)
    try:
        worker_reports = client.run(worker_probe.collect_versions, on_error="return")
        scheduler_report = _run_on_scheduler(client)
    finally:
        cloudpickle.unregister_pickle_by_value(worker_probe)

    client_report = worker_probe.collect_versions()
    problems = find_mismatches(client_report, {"scheduler": scheduler_report, **worker_reports})
    if problems:
        lines = "\n".join(f"  {problem}" for problem in problems)
        raise ClusterError(f"the cluster does not run the same software as this client:\n"
                           f"{lines}\n{_install_hint(client_report)}")
    logger.info("preflight: the scheduler and %d workers run the same versions as this "
                "client (mpp-dask %s, dask %s, Python %s)", len(worker_reports),
                client_report["versions"]["mpp-dask"], client_report["versions"]["dask"],
                client_report["python"])
