"""``python -m visgate_client``: the ``visgate`` command."""

from visgate_client.cli import main

main()
