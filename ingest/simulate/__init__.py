"""Event sources with ground truth: the starter stream, the ops simulator, the payments simulator."""
