"""Comparing the versions that the preflight probe reports from a cluster with the client's."""

from __future__ import annotations

from mpp_dask import worker_probe
from mpp_dask.preflight import find_mismatches


def _report(**versions: str) -> dict:
    base = {"mpp-dask": "0.1.0", "dask": "2026.8.0", "distributed": "2026.8.0",
            "pandas": "3.1.1", "pyarrow": "26.0.1", "msgpack": "1.2.4", "numpy": "2.4.6"}
    return {"python": "3.11", "versions": {**base, **versions}, "errors": {}}


def test_probe_reports_this_process():
    report = worker_probe.collect_versions()

    assert report["errors"] == {}
    assert set(report["versions"]) == {name for name, _ in worker_probe.PACKAGES}
    assert all(isinstance(version, str) for version in report["versions"].values())
    assert report["python"].count(".") == 1


def test_identical_cluster_passes():
    client = _report()
    assert find_mismatches(client, {"scheduler": _report(), "tcp://10.0.0.2:4000": _report()}) \
        == []


def test_mismatches_grouped_by_version():
    client = _report()
    old_pandas = _report(pandas="2.2.3")
    other_python = {**_report(), "python": "3.12"}
    workers = {
        "scheduler": _report(),
        "tcp://10.0.0.2:4000": old_pandas,
        "tcp://10.0.0.3:4000": old_pandas,
        "tcp://10.0.0.4:4000": _report(numpy="1.26.4"),
        "tcp://10.0.0.5:4000": other_python,
    }

    problems = find_mismatches(client, workers)

    assert problems == [
        "Python 3.12 on tcp://10.0.0.5:4000; this client has 3.11",
        "numpy 1.26.4 on tcp://10.0.0.4:4000; this client has 2.4.6",
        "pandas 2.2.3 on tcp://10.0.0.2:4000, tcp://10.0.0.3:4000; this client has 3.1.1",
    ]


def test_import_errors_and_failed_probes_listed():
    client = _report()
    without_mpp_dask = _report()
    without_mpp_dask["versions"]["mpp-dask"] = None
    without_mpp_dask["errors"]["mpp-dask"] = "ModuleNotFoundError: No module named 'mpp_dask'"

    problems = find_mismatches(client, {
        "scheduler": RuntimeError("pickled functions are disabled"),
        "tcp://10.0.0.2:4000": without_mpp_dask,
    })

    assert problems == [
        "the version check failed on scheduler: RuntimeError: pickled functions are disabled",
        "mpp-dask does not import on tcp://10.0.0.2:4000: ModuleNotFoundError: "
        "No module named 'mpp_dask'",
    ]
