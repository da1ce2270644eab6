"""``python -m instrument.store``: the store worker process (see ``instrument.store.worker``)."""

from instrument.store.worker import main

main()
