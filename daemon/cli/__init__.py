"""The ``adaptd`` command line. ``entry`` checks the extras, ``main`` is the click group; commands load lazily."""
