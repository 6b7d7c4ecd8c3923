"""The HTML report of one replay, drawn from the tables that ``mpp-dask run`` wrote.

The modules, in the order the data flows:

- ``inputs``: the manifest, the committed tables and the replay's own files;
- ``players``: player names, ally teams and colors;
- ``player_plots`` and ``combat_plots``: the Bokeh figures;
- ``page``: the sections, the HTML template and :func:`write_report`.
"""

from mpp_dask.report.page import default_report_path, render_report, write_report

__all__ = ["default_report_path", "render_report", "write_report"]
