"""Side-by-side benchmarks of Corral against hand-written peers. Run by hand, never in CI.

`python -m benchmarks.core --help` is the entry point: the hand-written peer (`peer`), Corral
pipelines and bare Ray Serve (`bare_serve`) are measured with the same load generator (`wrk`, or
the built-in `load`) in one run.
"""
