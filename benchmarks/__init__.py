"""envelope's benchmark suite: ``python -m benchmarks [--quick] [--out DIR]``.

One run measures envelope, the raw AES pipelines under it (the physical limit on this
machine) and the libraries a user would otherwise pick, then prints a table and writes
``results/latest.json`` and ``results/throughput.png``. See the "Performance" section of the README.
"""
