"""The transport-free data plane of a pipeline and its HTTP edge: no Ray import.

`DataPlane` picks a variant, mirrors shadows, runs the variant's segments and emits log records;
`HttpEdge` turns HTTP requests into DataPlane calls (auth, limits, codecs, errors to statuses).
The Serve deployments in `deployments/` are thin shells that pass in what needs Ray: remote
segments, the log sink, the auth check and metrics.
"""
