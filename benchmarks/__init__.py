"""Side-by-side benchmarks of Corral against hand-written peers. Run by hand, never in CI.

`python -m benchmarks.core --help` is the entry point; `peer` is the hand-written peer server and
`load` the load generator both systems are measured with.
"""
