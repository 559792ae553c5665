"""`python -m voxmeter.cli`: the same entry point as the `voxmeter` script."""

from voxmeter.cli import main

main()
