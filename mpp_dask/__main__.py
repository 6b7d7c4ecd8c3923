from mpp_dask.cli.entry import main

main()
