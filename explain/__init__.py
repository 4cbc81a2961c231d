"""Explainability, pure (no Ray): explain a pipeline as a black box `predict(table) -> table` with alibi.

`request` validates bodies and params, `features` encodes rows for alibi (category maps), `predictor`
turns the pipeline into alibi's predict function (batches, time budget, progress), `methods` holds one
adapter per method, `engine` runs an explanation and caches fitted explainers, `explanation` is the
`{meta, data}` result and `charts` draws it.
"""
