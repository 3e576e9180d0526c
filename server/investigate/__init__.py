"""The investigator kit: ready Cypher queries, the schema document generator and SVG pictures.

* :mod:`server.investigate.queries`: parameterised Cypher constants (``sleuth queries`` / ``sleuth query``);
* :mod:`server.investigate.schema_doc`: the tables of ``docs/graph-schema.md``, generated from
  ``schema.graph``;
* :mod:`server.investigate.svg`: a dependency-free layered SVG renderer;
* :mod:`server.investigate.pictures`: incidents, rings and RCA answers as pictures;
* :mod:`server.investigate.commands`: the ``queries``, ``query``, ``explain`` and ``rca`` subcommands.
"""
