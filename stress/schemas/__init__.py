"""JSON Schemas of the documents zonelimit writes (package data).

``compare.schema.json`` describes compare.json, format ``zonelimit.compare/2``
(docs/results-format.md); the tests validate every comparison they write against it.
"""
