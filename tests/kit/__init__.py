"""What the tests share: fake servers and agents, real guests, a fixed fleet state, helpers to
drive the console, the terminal and the command line. No test module imports another; what two
of them need lives here (fixtures: ``tests/conftest.py`` and each folder's ``conftest.py``)."""
