"""JSON Schemas of every document zonelimit writes (package data, read by stress.documents).

One file per document, ``<kind>.schema.json`` (run, schedule, compare, race, bench), plus
``host.schema.json``, the host record they share.  They are the reading contract: the
type and range of every field, the fields every document of the format's major version
has (``required``), and the format string.  Readers ignore keys they do not know (an
added key is not a version change), so the objects stay open.  docs/results-format.md
describes each document and points here.  compare.schema.json is ``zonelimit.compare/2``;
a ``/1`` document is upgraded before it is checked (stress.documents.upgrade_compare).
"""
