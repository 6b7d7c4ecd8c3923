from mpp_dask.cli.main import cli

cli()
