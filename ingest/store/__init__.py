"""Graph store back ends (Neo4j, in-memory) implementing :class:`schema.store.GraphStore`."""
