"""``python -m adaptd.daemon.cli``: the ``adaptd`` command."""

from adaptd.daemon.cli.entry import main

main()
